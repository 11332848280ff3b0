"""DELETE /orders, GET /orders/by-client-order-id/{key} and the one error shape, end to end over HTTP.

The stack's processes are real: the API server, the runner (placement,
cancel requests, executions), the exchange simulator and its feed.
"""

from __future__ import annotations

import signal
import uuid
from typing import Any
from urllib.parse import quote

import pytest
import requests

from chalicelib.domain.accounts import KeyScope
from chalicelib.service.accounts import create_api_key
from devstack.stack import LocalStack, emulator_api_keys
from tests.e2e.helpers import Exchange
from tests.polling import wait_until

# moto_only: API logic and error shapes; one cancel's queue path is test_list_and_cancel's.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]

APPLE = "US0378331005"
ORDER = {"type": "limit", "side": "buy", "instrument": APPLE, "quantity": 10, "limit_price": 187.25}
LIVE = ("placed", "partially_filled")
DONE = ("filled", "canceled", "rejected", "expired")


class Account:
    """One account's client: every request carries its key."""

    def __init__(self, stack: LocalStack, account_id: str, scope: KeyScope = KeyScope.TRADE) -> None:
        self.api_url = stack.api_url
        keys = emulator_api_keys(stack.endpoint_url, stack.resources["ApiKeysTableName"])
        self.key = create_api_key(account_id, None, keys, scope=scope).plaintext
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.key}"

    def post(self, **changes: Any) -> dict[str, Any]:
        response = self.session.post(f"{self.api_url}/orders", json={**ORDER, **changes}, timeout=30)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def order(self, order_id: str) -> dict[str, Any]:
        response = self.session.get(f"{self.api_url}/orders/{order_id}", timeout=30)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def in_status(self, order_id: str, *statuses: str) -> Any:
        def check() -> dict[str, Any] | None:
            order = self.order(order_id)
            return order if order["status"] in statuses else None

        return check

    def lookup(self, encoded_key: str) -> requests.Response:
        return self.session.get(f"{self.api_url}/orders/by-client-order-id/{encoded_key}", timeout=30)

    def cancel_all(self) -> requests.Response:
        return self.session.delete(f"{self.api_url}/orders", timeout=60)


def new_account(stack: LocalStack, purpose: str, scope: KeyScope = KeyScope.TRADE) -> tuple[str, Account]:
    account_id = f"{purpose}-{uuid.uuid4().hex[:8]}"
    return account_id, Account(stack, account_id, scope)


@pytest.fixture
def alice(stack: LocalStack) -> Account:
    return new_account(stack, "alice")[1]


@pytest.fixture
def bob(stack: LocalStack) -> Account:
    return new_account(stack, "bob")[1]


# --- GET /orders/by-client-order-id/{client_order_id} -------------------------------------------


def test_an_order_is_found_by_its_client_order_id_by_its_account_only(stack: LocalStack, bob: Account) -> None:
    account_id, alice = new_account(stack, "alice")
    key = f"e2e key/{uuid.uuid4().hex[:6]}%\u00fc"  # a space, a slash, a percent sign and a non-ASCII letter
    created = alice.post(client_order_id=key)
    found = alice.lookup(quote(key, safe=""))
    assert found.status_code == 200, found.text
    assert (found.json()["id"], found.json()["client_order_id"]) == (created["id"], key)
    # A read-only key of the account reads it too.
    reader = Account(stack, account_id, KeyScope.READ)
    assert reader.lookup(quote(key, safe="")).json()["id"] == created["id"]
    # Another account's order with this key, and a key nobody used: the same 404.
    theirs, unknown = bob.lookup(quote(key, safe="")), alice.lookup("never-used")
    assert (
        (theirs.status_code, theirs.json())
        == (unknown.status_code, unknown.json())
        == (
            404,
            {"message": "Order not found"},
        )
    )


@pytest.mark.parametrize(("encoded", "fragment"), [("k" * 49, "at most 48"), ("nul%00", "U+0000"), ("%FF", "UTF-8")])
def test_a_client_order_id_create_would_refuse_is_a_422(alice: Account, encoded: str, fragment: str) -> None:
    response = alice.lookup(encoded)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["message"]
    assert response.json()["errors"][0]["field"] == "client_order_id"


# --- DELETE /orders -----------------------------------------------------------------------------


def test_cancel_all_cancels_each_open_order_of_the_caller_as_its_own_cancel_would(
    stack: LocalStack, alice: Account, bob: Account, exchange: Exchange
) -> None:
    # Limit orders rest for a minute (a few may fill at once); none is refused or canceled by the venue.
    exchange.configure(limit_ttl_s=60, reject_rate=0, cancel_rate=0)
    resting = [alice.post()["id"] for _ in range(5)]
    theirs = bob.post()["id"]
    for order_id in resting:
        wait_until(alice.in_status(order_id, *LIVE, *DONE), timeout_s=30)
    wait_until(bob.in_status(theirs, *LIVE, *DONE), timeout_s=30)
    runner = stack.process("runner")
    runner.signal(signal.SIGSTOP)  # from here no order of alice's changes but by her cancels
    try:
        never_sent = alice.post()["id"]  # its placement message waits in the queue
        live = [order_id for order_id in resting if alice.order(order_id)["status"] in LIVE]
        assert live, "every one of 5 resting limit orders was done at once"
        theirs_before = bob.order(theirs)["status"]

        first = alice.cancel_all()
        assert first.status_code == 207, first.text
        body = first.json()
        assert (body["more"], body["next"]) == (False, None)
        results = {result["id"]: result for result in body["results"]}
        assert set(results) == {never_sent, *live}
        assert (results[never_sent]["status"], results[never_sent]["order"]["status"]) == (200, "canceled")
        for order_id in live:
            assert (results[order_id]["status"], results[order_id]["order"]["status"]) == (202, "pending_cancel")
        assert first.headers["X-Correlation-Id"]

        # Again: the same answer for the orders still open, nothing else changed.
        second = alice.cancel_all()
        assert second.status_code == 207, second.text
        assert sorted((r["id"], r["status"], r["order"]["status"]) for r in second.json()["results"]) == sorted(
            (order_id, 202, "pending_cancel") for order_id in live
        )
        assert bob.order(theirs)["status"] == theirs_before
    finally:
        runner.signal(signal.SIGCONT)

    for order_id in live:
        done = wait_until(alice.in_status(order_id, "canceled", "filled"), timeout_s=60)
        record = exchange.record(order_id)
        assert record is not None
        if done["status"] == "canceled":
            assert record["canceled_by_request"] == 1  # asked once, though cancel-all ran twice
    assert alice.order(never_sent)["status"] == "canceled"
    assert (exchange.record(theirs) or {}).get("canceled_by_request", 0) == 0  # never asked to cancel it
    # Nothing open any more: an empty 207.
    assert wait_until(lambda: alice.cancel_all().json() == {"results": [], "more": False, "next": None}, timeout_s=30)


def test_a_never_sent_order_canceled_by_cancel_all_never_reaches_the_exchange(
    alice: Account, exchange: Exchange, runner_paused: None
) -> None:
    order_id = alice.post()["id"]
    answer = alice.cancel_all()
    assert [(r["id"], r["status"]) for r in answer.json()["results"]] == [(order_id, 200)]
    assert exchange.record(order_id) is None


def test_with_no_open_orders_cancel_all_is_an_empty_207(alice: Account) -> None:
    answer = alice.cancel_all()
    assert (answer.status_code, answer.json()) == (207, {"results": [], "more": False, "next": None})


def test_a_read_only_key_may_not_cancel_all(stack: LocalStack, runner_paused: None) -> None:
    account_id, trader = new_account(stack, "scoped")
    order_id = trader.post()["id"]
    refused = Account(stack, account_id, KeyScope.READ).cancel_all()
    assert refused.status_code == 403, refused.text
    assert list(refused.json()) == ["message"]
    assert trader.order(order_id)["status"] == "pending"


# --- One error shape ----------------------------------------------------------------------------


def test_a_post_without_a_json_content_type_is_our_415_and_without_any_is_read_as_json(
    alice: Account, runner_paused: None
) -> None:
    key = f"form-{uuid.uuid4().hex[:8]}"
    body = f'{{"type": "limit", "side": "buy", "instrument": "{APPLE}", "quantity": 1, "limit_price": 1.5,'
    body += f' "client_order_id": "{key}"}}'
    url = f"{alice.api_url}/orders"
    auth = {"Authorization": f"Bearer {alice.key}"}
    # What `curl -d '<json>' <url>` sends.
    form = requests.post(
        url, data=body, headers={**auth, "Content-Type": "application/x-www-form-urlencoded"}, timeout=30
    )
    assert form.status_code == 415
    assert list(form.json()) == ["message"]
    assert "Content-Type must be application/json" in form.json()["message"]
    assert alice.lookup(key).status_code == 404  # nothing stored
    # No Content-Type header at all (requests sends none for a bytes body): read as JSON.
    bare = requests.post(url, data=body.encode(), headers=auth, timeout=30)
    assert "content-type" not in {name.lower() for name in bare.request.headers}
    assert bare.status_code == 201, bare.text
    assert alice.lookup(key).json()["id"] == bare.json()["id"]


def test_an_unknown_method_or_route_answers_in_the_same_shape(alice: Account) -> None:
    put = alice.session.put(f"{alice.api_url}/orders", json=ORDER, timeout=30)
    assert put.status_code == 405
    assert put.json() == {"message": "Method 'PUT' is not allowed on this path; allowed: POST, GET, DELETE"}
    # As API Gateway answers a path no route has (a request without an Authorization header).
    nowhere = requests.get(f"{alice.api_url}/no/such/route", timeout=30)
    assert (nowhere.status_code, nowhere.json()) == (403, {"message": "Missing Authentication Token"})
