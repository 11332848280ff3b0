"""Orders end to end over HTTP: chalice local, the Lambda runner, the emulator and the exchange simulator."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests

from chalicelib.adapters.queue import placement_message
from chalicelib.domain.model import order_id_for_client_key
from devstack.processes import ManagedProcess, free_port
from devstack.stack import DEMO_ACCOUNT, LocalStack, start_api
from tests.e2e.helpers import Exchange, auth, dead_lettered, order_in_status
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

ISIN = "US0378331005"
STORE_FAILED = {"message": "Internal server error while placing the order"}


def limit_order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "limit", "side": "buy", "instrument": ISIN, "quantity": 10, "limit_price": 187.25}
    body.update(changes)
    return body


def post(stack: LocalStack, body: Any, api_url: str | None = None) -> requests.Response:
    """POST /orders as the stack's demo account, to the stack's API or another one (api_url)."""
    return requests.post(f"{api_url or stack.api_url}/orders", json=body, headers=auth(stack.api_key), timeout=30)


def test_a_new_order_is_pending_then_placed(stack: LocalStack, exchange: Exchange) -> None:
    exchange.configure(limit_ttl_s=60)  # open long enough to be seen placed, not expired already
    response = post(stack, limit_order())
    assert response.status_code == 201
    created = response.json()
    assert created["status"] == "pending"
    assert created["limit_price"] == 187.25
    assert created["created_at"].endswith("Z")
    assert created["client_order_id"] is None

    placed = wait_until(order_in_status(stack, created["id"], "placed", "failed"))
    assert placed["status"] == "placed"
    assert placed["placed_at"] is not None
    assert {k: placed[k] for k in ("type", "side", "instrument", "quantity", "limit_price")} == {
        k: created[k] for k in ("type", "side", "instrument", "quantity", "limit_price")
    }
    record = exchange.record(created["id"])
    assert record is not None
    assert record["accepted"] == 1


@pytest.mark.moto_only  # the API's echo
def test_a_market_order_has_a_null_price(stack: LocalStack) -> None:
    response = post(stack, {"type": "market", "side": "sell", "instrument": ISIN, "quantity": 3})
    assert response.status_code == 201
    assert response.json()["limit_price"] is None


def test_an_exchange_that_always_fails_ends_in_failed_after_the_configured_attempts_and_the_dlq(
    stack: LocalStack, exchange: Exchange, sqs: Any
) -> None:
    exchange.configure(failure_rate=1.0)
    order = post(stack, limit_order()).json()

    # Failed once the exchange, asked after the last attempt's lease ran out, said it does not know it.
    failed = wait_until(order_in_status(stack, order["id"], "failed", "placed"), timeout_s=90)
    assert failed["status"] == "failed"
    assert failed["failure_reason"] == "exchange unreachable"  # the detail is for operators (last_error, logs)
    record = exchange.record(order["id"])
    assert record is not None
    assert (record["failures"], record["accepted"]) == (3, 0)

    # The placement worker sends it there once the exchange said it does not
    # know the order; say where the message is if it never arrives.
    try:
        wait_until(dead_lettered(sqs, stack, order["id"]), timeout_s=120)
    except AssertionError as missing:
        raise AssertionError(f"not in the DLQ; queues: {queue_depths(sqs, stack)}") from missing


def queue_depths(sqs: Any, stack: LocalStack) -> dict[str, dict[str, str]]:
    names = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
    return {
        key: sqs.get_queue_attributes(QueueUrl=stack.resources[key], AttributeNames=list(names))["Attributes"]
        for key in ("OrdersQueueUrl", "OrdersDeadLetterQueueUrl")
    }


def test_duplicate_deliveries_place_the_order_once(stack: LocalStack, exchange: Exchange, sqs: Any) -> None:
    exchange.configure(latency_s=0.5)  # so the copies overlap at the exchange
    order = post(stack, limit_order()).json()
    queue_url = stack.resources["OrdersQueueUrl"]
    for _ in range(3):
        sqs.send_message(QueueUrl=queue_url, MessageBody=placement_message(order["id"]))

    wait_until(order_in_status(stack, order["id"], "placed"))

    def all_copies_consumed() -> bool:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        return attributes["ApproximateNumberOfMessages"] == "0" == attributes["ApproximateNumberOfMessagesNotVisible"]

    wait_until(all_copies_consumed)
    record = exchange.record(order["id"])
    assert record is not None
    assert record["accepted"] == 1
    final = requests.get(f"{stack.api_url}/orders/{order['id']}", headers=auth(stack.api_key), timeout=5).json()
    assert final["status"] == "placed"


def test_the_idempotency_key_returns_the_same_order_and_places_it_once(stack: LocalStack, exchange: Exchange) -> None:
    key = f"client-{uuid.uuid4()}"
    first = post(stack, limit_order(client_order_id=key))
    second = post(stack, limit_order(client_order_id=key))
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["client_order_id"] == key

    conflict = post(stack, limit_order(client_order_id=key, quantity=11))
    assert conflict.status_code == 409
    assert key in conflict.json()["message"]

    wait_until(order_in_status(stack, first.json()["id"], "placed"))
    record = exchange.record(first.json()["id"])
    assert record is not None
    assert record["accepted"] == 1


INVALID_ORDERS = [
    ({"side": "buy", "instrument": ISIN, "quantity": 1}, {"type": "type is required"}),
    (limit_order(type="trailing_stop"), {"type": "type must be one of 'market', 'limit', 'stop'"}),
    (limit_order(side="hold"), {"side": "side must be one of 'buy' or 'sell'"}),
    (limit_order(instrument="US03783310"), {"instrument": "ISIN"}),
    (limit_order(instrument="us0378331005"), {"instrument": "ISIN"}),
    (limit_order(instrument=12), {"instrument": "instrument must be a string"}),
    (limit_order(quantity=0), {"quantity": "quantity must be greater than 0"}),
    (limit_order(quantity=-5), {"quantity": "greater than 0"}),
    (limit_order(quantity=1.5), {"quantity": "quantity must be an integer"}),
    (limit_order(quantity="10"), {"quantity": "quantity must be an integer"}),
    (limit_order(limit_price=None), {"limit_price": "limit_price is required for type limit"}),
    (limit_order(limit_price=0), {"limit_price": "greater than 0"}),
    (limit_order(limit_price=-1.5), {"limit_price": "greater than 0"}),
    (limit_order(limit_price=1.234), {"limit_price": "at most 2 decimal places"}),
    (limit_order(limit_price="10.5"), {"limit_price": "JSON number"}),
    (
        {"type": "market", "side": "buy", "instrument": ISIN, "quantity": 1, "limit_price": 10},
        {"limit_price": "limit_price must be absent or null for type market"},
    ),
    (limit_order(client_order_id="x" * 49), {"client_order_id": "48"}),
    (limit_order(client_order_id=""), {"client_order_id": "client_order_id"}),
    (limit_order(venue="XNAS"), {"venue": "not a known field"}),
    (
        {"type": "limit", "side": "short", "quantity": 0},
        {"side": "side", "instrument": "required", "quantity": "greater than 0", "limit_price": "required"},
    ),
]


@pytest.mark.moto_only  # API validation
@pytest.mark.parametrize(("body", "expected"), INVALID_ORDERS)
def test_invalid_orders_get_422_naming_every_offending_field(
    stack: LocalStack, body: dict[str, Any], expected: dict[str, str]
) -> None:
    response = post(stack, body)
    assert response.status_code == 422, response.text
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert set(errors) == set(expected)
    for field, fragment in expected.items():
        assert fragment in errors[field]
        assert fragment in response.json()["message"]


@pytest.mark.moto_only  # API validation
@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"[1, 2]", b'"order"', b"42", b"null", b'{"quantity": NaN}', b"{bad"]
)
def test_a_body_that_is_not_a_json_object_is_400(stack: LocalStack, raw: bytes) -> None:
    headers = {"Content-Type": "application/json", **auth(stack.api_key)}
    response = requests.post(f"{stack.api_url}/orders", data=raw, headers=headers, timeout=10)
    assert response.status_code == 400
    assert "JSON" in response.json()["message"]


@pytest.mark.moto_only  # an HTTP error shape
@pytest.mark.parametrize("order_id", ["nope", str(uuid.uuid4()), "00000000-0000-0000-0000-00000000000Z", "%20"])
def test_an_unknown_or_malformed_id_is_404(stack: LocalStack, order_id: str) -> None:
    response = requests.get(f"{stack.api_url}/orders/{order_id}", headers=auth(stack.api_key), timeout=10)
    assert response.status_code == 404
    assert response.json() == {"message": "Order not found"}


@pytest.fixture
def api_with(stack: LocalStack, tmp_path: Any) -> Iterator[Any]:
    """Start a second API with some of the stack's settings changed; its URL."""
    started: list[ManagedProcess] = []

    def start(**overrides: str) -> str:
        port = free_port()
        log = (tmp_path / f"api-{len(started)}.log").open("wb")
        started.append(start_api(port, {**stack.env, **overrides}, log))
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.stop()


def test_dynamodb_down_gives_the_exact_500_and_stores_nothing(
    stack: LocalStack, exchange: Exchange, api_with: Any
) -> None:
    # DynamoDB failing every request for orders, while the API keys can still
    # be read: the orders table this API uses does not exist. (DynamoDB
    # unreachable altogether is refused earlier, by the authorizer, with a
    # 503: tests/e2e/test_auth.py.)
    broken_api = api_with(ORDERS_TABLE_NAME=f"{stack.resources['OrdersTableName']}-unavailable")
    key = f"outage-{uuid.uuid4()}"
    response = post(stack, limit_order(client_order_id=key), api_url=broken_api)
    assert response.status_code == 500
    assert response.json() == STORE_FAILED

    order_id = order_id_for_client_key(DEMO_ACCOUNT, key)
    table = boto3.resource("dynamodb", endpoint_url=stack.endpoint_url).Table(stack.resources["OrdersTableName"])
    assert "Item" not in table.get_item(Key={"id": order_id}, ConsistentRead=True)
    assert requests.get(f"{stack.api_url}/orders/{order_id}", headers=auth(stack.api_key), timeout=5).status_code == 404
    assert exchange.record(order_id) is None


def test_sqs_down_still_answers_201_and_the_order_is_placed_by_the_sweep(
    stack: LocalStack, exchange: Exchange, api_with: Any
) -> None:
    exchange.configure(reject_rate=0.0, cancel_rate=0.0)  # the exchange takes it (the fixture restores them)
    broken_api = api_with(AWS_ENDPOINT_URL_SQS=f"http://127.0.0.1:{free_port()}")
    response = post(stack, limit_order(), api_url=broken_api)
    assert response.status_code == 201
    order_id = response.json()["id"]
    current = requests.get(f"{stack.api_url}/orders/{order_id}", headers=auth(stack.api_key), timeout=5).json()
    assert current["status"] == "pending"

    # Past pending through the exchange: a limit order is "placed" for about a second only (it fills or
    # expires after limit_ttl_s), too short to be sure to see on a loaded machine.
    reached = ("placed", "partially_filled", "filled", "expired")
    placed = wait_until(order_in_status(stack, order_id, *reached), timeout_s=60)
    assert placed["placed_at"] is not None
    record = exchange.record(order_id)
    assert record is not None
    assert record["accepted"] == 1


def test_the_correlation_id_follows_the_order_into_the_placement_logs(stack: LocalStack, exchange: Exchange) -> None:
    correlation_id = f"trace-{uuid.uuid4()}"
    key = f"corr-{uuid.uuid4()}"
    response = requests.post(
        f"{stack.api_url}/orders",
        json=limit_order(client_order_id=key),
        headers={"X-Correlation-Id": correlation_id, **auth(stack.api_key)},
        timeout=30,
    )
    assert response.status_code == 201
    assert response.headers["X-Correlation-Id"] == correlation_id
    order_id = response.json()["id"]
    # A replay from another request still names the order's own correlation id.
    replay = post(stack, limit_order(client_order_id=key))
    assert replay.headers["X-Correlation-Id"] == correlation_id

    wait_until(order_in_status(stack, order_id, "placed", "partially_filled", "filled"))

    def placement_logged() -> bool:
        for line in stack.log_path.read_text(errors="replace").splitlines():
            if '"placement attempt"' in line and order_id in line:
                entry = json.loads(line)
                return bool(entry["correlation_id"] == correlation_id and entry["order_id"] == order_id)
        return False

    wait_until(placement_logged, timeout_s=30)


@pytest.mark.moto_only  # API validation
def test_the_configured_order_size_bound_is_a_422_naming_it(stack: LocalStack) -> None:
    """A second API configured with a small maximum order size (MAX_ORDER_QUANTITY)."""
    port = free_port()
    env = {**stack.env, "MAX_ORDER_QUANTITY": "50"}
    with start_api(port, env, subprocess.DEVNULL):
        too_big = post(stack, limit_order(quantity=51), api_url=f"http://127.0.0.1:{port}")
        assert too_big.status_code == 422
        assert too_big.json()["errors"] == [
            {"field": "quantity", "message": "quantity must be at most 50 (maximum order size)"}
        ]
        assert post(stack, limit_order(quantity=50), api_url=f"http://127.0.0.1:{port}").status_code == 201
