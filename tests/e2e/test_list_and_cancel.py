"""Accounts' orders end to end: isolation between accounts, GET /orders page by page, and every cancel path."""

from __future__ import annotations

import signal
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests

from devstack.stack import LocalStack
from tests.e2e.helpers import Exchange
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

APPLE, SAP = "US0378331005", "DE0007164600"
OPEN = {"pending", "placed", "partially_filled", "pending_cancel"}
CLOSED = {"filled", "canceled", "rejected", "expired", "failed"}


class Client:
    """One account's API client: every request carries its key."""

    def __init__(self, api_url: str, key: str) -> None:
        self.api_url = api_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def post(self, **changes: Any) -> requests.Response:
        body: dict[str, Any] = {"type": "limit", "side": "buy", "instrument": APPLE, "quantity": 10}
        body["limit_price"] = 187.25
        body.update(changes)
        return self.session.post(f"{self.api_url}/orders", json=body, timeout=30)

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(f"{self.api_url}{path}", params=params, timeout=30)

    def cancel(self, order_id: str) -> requests.Response:
        return self.session.delete(f"{self.api_url}/orders/{order_id}", timeout=30)

    def order(self, order_id: str) -> dict[str, Any]:
        response = self.get(f"/orders/{order_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def in_status(self, order_id: str, *statuses: str) -> Any:
        def check() -> dict[str, Any] | None:
            order = self.order(order_id)
            return order if order["status"] in statuses else None

        return check


def new_account(stack: LocalStack, purpose: str) -> Client:
    return Client(stack.api_url, stack.new_api_key(f"{purpose}-{uuid.uuid4().hex[:8]}"))


@pytest.fixture
def alice(stack: LocalStack) -> Client:
    return new_account(stack, "alice")


@pytest.fixture
def bob(stack: LocalStack) -> Client:
    return new_account(stack, "bob")


def queue_drained(sqs: Any, stack: LocalStack) -> bool:
    url = sqs.get_queue_url(QueueName=stack.resources["OrdersQueueName"])["QueueUrl"]
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return all(attributes[name] == "0" for name in names)


# --- Isolation ---------------------------------------------------------------------------


@pytest.mark.moto_only  # ownership is API logic; per-account reads are test_list_orders'
def test_another_accounts_order_is_a_404_everywhere_exactly_like_a_missing_one(alice: Client, bob: Client) -> None:
    created = alice.post()
    assert created.status_code == 201
    order_id = created.json()["id"]
    missing = str(uuid.uuid4())
    for path in (f"/orders/{order_id}", f"/orders/{order_id}/executions"):
        theirs, nothing = bob.get(path), bob.get(path.replace(order_id, missing))
        assert (
            (theirs.status_code, theirs.json())
            == (nothing.status_code, nothing.json())
            == (
                404,
                {"message": "Order not found"},
            )
        )
    refused = bob.cancel(order_id)
    assert (refused.status_code, refused.json()) == (404, {"message": "Order not found"})
    assert alice.order(order_id)["status"] != "canceled"
    assert order_id not in [o["id"] for o in bob.get("/orders").json()["orders"]]


@pytest.mark.moto_only  # ids per account are domain logic; the conditional put is test_dynamodb_repository's
def test_the_idempotency_key_is_each_accounts_own(alice: Client, bob: Client) -> None:
    key = f"shared-{uuid.uuid4()}"
    mine, theirs = alice.post(client_order_id=key), bob.post(client_order_id=key, quantity=99)
    assert (mine.status_code, theirs.status_code) == (201, 201)  # not a 409: different accounts
    assert mine.json()["id"] != theirs.json()["id"]
    again = alice.post(client_order_id=key)
    assert (again.status_code, again.json()["id"]) == (200, mine.json()["id"])


# --- GET /orders ----------------------------------------------------------------------------


@pytest.mark.moto_only  # the GSI Query: test_list_orders'
def test_the_list_pages_through_the_accounts_orders_newest_first(alice: Client, bob: Client) -> None:
    created = []
    for i in range(7):
        response = alice.post(instrument=SAP if i % 2 else APPLE, side="sell" if i % 3 == 0 else "buy")
        assert response.status_code == 201
        created.append(response.json())
    bob.post()
    expected = [order["id"] for order in reversed(created)]

    def every_page(**filters: Any) -> list[str]:
        seen, cursor = [], None
        while True:
            params = {**filters, "limit": 3, **({"next": cursor} if cursor else {})}
            response = alice.get("/orders", **params)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["orders"]) <= 3
            seen += [order["id"] for order in page["orders"]]
            cursor = page["next"]
            if cursor is None:
                return seen

    # The index is eventually consistent on AWS: wait for the last order to show.
    wait_until(lambda: every_page() == expected, timeout_s=20)
    by_id = {order["id"]: order for order in created}
    assert every_page(instrument=SAP) == [i for i in expected if by_id[i]["instrument"] == SAP]
    assert every_page(side="sell") == [i for i in expected if by_id[i]["side"] == "sell"]
    for group, statuses in (("open", OPEN), ("closed", CLOSED)):
        listed = alice.get("/orders", status=group, limit=500).json()["orders"]
        assert all(order["status"] in statuses for order in listed)
    # The API shows milliseconds (cut, not rounded); the store keeps microseconds.
    middle = datetime.fromisoformat(created[3]["created_at"])
    assert every_page(after=(middle + timedelta(milliseconds=1)).isoformat()) == expected[:3]
    assert every_page(until=middle.isoformat()) == expected[4:]


@pytest.mark.moto_only  # API validation
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "lost"}, "status"),
        ({"side": "short"}, "side"),
        ({"instrument": "apple"}, "instrument"),
        ({"after": "yesterday"}, "after"),
        ({"after": "2026-01-02T00:00:00"}, "after"),
        ({"after": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"next": "bm90LWEtY3Vyc29y"}, "next"),
        ({"colour": "red"}, "colour"),
        ({"after": "0001-01-01T00:00:00+01:00"}, "after"),  # no UTC equivalent: once a 500
        ({"until": "9999-12-31T23:59:59.999999-05:00"}, "until"),
    ],
)
def test_a_bad_query_parameter_is_a_422_naming_it(alice: Client, params: dict[str, str], field: str) -> None:
    response = alice.get("/orders", **params)
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]]


@pytest.mark.moto_only  # API validation
def test_a_repeated_query_parameter_is_a_422(alice: Client) -> None:
    response = alice.session.get(f"{alice.api_url}/orders?limit=2&limit=3", timeout=30)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "limit", "message": "limit must be given at most once"}]


# --- DELETE /orders/{id} ---------------------------------------------------------------------


def test_a_pending_order_is_canceled_at_once_and_never_reaches_the_exchange(
    stack: LocalStack, alice: Client, exchange: Exchange, sqs: Any, runner_paused: None
) -> None:
    created = alice.post()
    order_id = created.json()["id"]
    # Its placement message is on the queue: the worker is paused.
    canceled = alice.cancel(order_id)
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["remaining_quantity"] == 0
    stack.process("runner").signal(signal.SIGCONT)
    wait_until(lambda: queue_drained(sqs, stack), timeout_s=30)
    assert alice.order(order_id)["status"] == "canceled"
    assert alice.order(order_id)["placed_at"] is None
    assert exchange.record(order_id) is None


def test_a_live_order_is_pending_cancel_until_the_exchanges_feed_confirms(alice: Client, exchange: Exchange) -> None:
    # Limit orders rest (or fill in part) for a minute; a few of them may fill at once.
    exchange.configure(limit_ttl_s=60, reject_rate=0, cancel_rate=0)
    ids = [alice.post().json()["id"] for _ in range(8)]
    live = []
    for order_id in ids:
        wait_until(alice.in_status(order_id, "placed", "partially_filled", "filled"), timeout_s=30)
    time.sleep(0.5)  # let the quick fills arrive first
    for order_id in ids:
        response = alice.cancel(order_id)
        if response.status_code == 409:  # it filled first
            assert response.json() == {"message": "Order is filled and can no longer be canceled"}
            continue
        assert response.status_code == 202, response.text
        assert response.json()["status"] in ("pending_cancel", "canceled")
        live.append(order_id)
    assert live, "every one of 8 resting limit orders filled at once"
    for order_id in live:
        done = wait_until(alice.in_status(order_id, "canceled", "filled"), timeout_s=30)
        record = exchange.record(order_id)
        assert record is not None
        if done["status"] == "canceled":
            assert record["canceled_by_request"] == 1
            assert done["remaining_quantity"] == 0
            assert done["filled_quantity"] == record["execution"]["cum_qty"]


def test_a_cancel_racing_the_placement_ends_canceled_and_never_live_at_the_exchange(
    alice: Client, exchange: Exchange
) -> None:
    # The exchange takes 2 s to answer: the cancel arrives while the placement is at the exchange.
    exchange.configure(latency_s=2.0, limit_ttl_s=60, reject_rate=0, cancel_rate=0)
    order_id = alice.post().json()["id"]
    time.sleep(0.8)
    response = alice.cancel(order_id)
    assert response.status_code in (200, 202), response.text
    done = wait_until(alice.in_status(order_id, "canceled", "filled"), timeout_s=60)
    record = exchange.record(order_id)
    if response.status_code == 200:  # canceled before the worker claimed it
        assert record is None
    elif done["status"] == "canceled":
        # Placed, then canceled at the exchange on our request: nothing left live there.
        assert record is not None
        assert record["canceled_by_request"] == 1


@pytest.mark.moto_only  # an HTTP error shape
def test_a_done_order_answers_409_with_its_status(alice: Client) -> None:
    order_id = alice.post(type="market", limit_price=None).json()["id"]
    wait_until(alice.in_status(order_id, "filled", "rejected", "canceled"), timeout_s=30)
    status = alice.order(order_id)["status"]
    response = alice.cancel(order_id)
    assert (response.status_code, response.json()) == (
        409,
        {"message": f"Order is {status} and can no longer be canceled"},
    )


@pytest.mark.moto_only  # HTTP answers of the cancel route
def test_canceling_twice_or_an_unknown_order(alice: Client, runner_paused: None) -> None:
    order_id = alice.post().json()["id"]
    assert alice.cancel(order_id).status_code == 200
    again = alice.cancel(order_id)
    assert (again.status_code, again.json()) == (409, {"message": "Order is canceled and can no longer be canceled"})
    assert alice.cancel(str(uuid.uuid4())).status_code == 404
    assert alice.cancel("not-an-id").status_code == 404
