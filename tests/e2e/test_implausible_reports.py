"""A venue that lies: implausible and malformed reports through the real feed -> bridge -> Kinesis -> consumer path.

Each one must land on the executions failed queue with its reason, change nothing of the order, and leave every
GET answering valid JSON (issue 15, finding 1).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from devstack.stack import LocalStack
from tests.e2e.helpers import Exchange, auth
from tests.e2e.test_executions import agrees_with_exchange, executions_as_sent, post_order
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

QUANTITY = 10
LIMIT = "600"  # above every reference price of the simulator (10.00..500.00): fills come at the market


def strict_json(response: requests.Response) -> Any:
    """The body, refusing NaN and Infinity, which Python's json writes but which are not JSON."""
    assert response.status_code == 200, response.text

    def refuse(constant: str) -> Any:
        raise AssertionError(f"not JSON: {constant} in {response.url}")

    return json.loads(response.text, parse_constant=refuse)


def reads(stack: LocalStack, order_id: str) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """The order as GET /orders/{id}, as its entry in GET /orders, and GET /orders/{id}/executions answer it."""
    headers = auth(stack.api_key)
    one = strict_json(requests.get(f"{stack.api_url}/orders/{order_id}", headers=headers, timeout=10))
    page = strict_json(requests.get(f"{stack.api_url}/orders", headers=headers, timeout=10))
    listed = [entry for entry in page["orders"] if entry["id"] == order_id]
    executions = strict_json(requests.get(f"{stack.api_url}/orders/{order_id}/executions", headers=headers, timeout=10))
    return one, (listed[0] if listed else {}), executions["executions"]


def quarantined(sqs: Any, queue_url: str, exec_ids: set[str]) -> Callable[[], dict[str, str] | None]:
    """A condition: every one of exec_ids is on the failed queue (exec_id -> reason), taken off it; else None."""
    found: dict[str, str] = {}

    def check() -> dict[str, str] | None:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in messages.get("Messages", []):
            body = json.loads(message["Body"])
            data = base64.b64decode(body.get("data") or b"").decode(errors="replace")
            mine = next((exec_id for exec_id in exec_ids if f'"{exec_id}"' in data), None)
            if mine is None:  # another test's: back on the queue at once
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
                continue
            found[mine] = body["reason"]
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return dict(found) if set(found) == exec_ids else None

    return check


def test_implausible_and_malformed_reports_are_quarantined_and_change_nothing(
    stack: LocalStack, exchange: Exchange, sqs: Any
) -> None:
    exchange.configure(reject_rate=0.0, cancel_rate=0.0)
    order = post_order(stack, type="limit", quantity=QUANTITY, limit_price=float(LIMIT))
    wait_until(lambda: agrees_with_exchange(stack, exchange, order["id"]), timeout_s=60)
    # Settled by the reconciler, maybe, before its own reports came: the snapshot waits for them.
    wait_until(lambda: executions_as_sent(stack, exchange, order["id"]), timeout_s=60)
    record = exchange.record(order["id"])
    assert record is not None and record["exchange_order_id"]
    before = reads(stack, order["id"])

    marker = uuid.uuid4().hex[:8]
    fill = {
        "client_order_id": order["id"],
        "exchange_order_id": record["exchange_order_id"],
        "exec_type": "fill",
        "last_qty": QUANTITY,
        "last_price": "100.00",
        "cum_qty": QUANTITY,
        "leaves_qty": 0,
        "avg_price": "100.00",
        "transact_time": "2026-11-23T21:07:06.123Z",
    }
    lies: dict[str, tuple[dict[str, Any], str]] = {
        f"{marker}-foreign": ({"exchange_order_id": f"X-{marker}"}, "implausible execution report: exchange_order_id"),
        f"{marker}-overfill": (
            {"last_qty": QUANTITY + 5, "cum_qty": QUANTITY + 5},
            f"implausible execution report: cum_qty {QUANTITY + 5} is above the order's quantity {QUANTITY}",
        ),
        f"{marker}-limit": (
            {"last_price": "700.00", "avg_price": "700.00"},
            "implausible execution report: last_price 700.00 is above the buy limit",
        ),
        f"{marker}-exponent": ({"avg_price": "1e400"}, "malformed execution report: avg_price"),
        f"{marker}-digits": ({"avg_price": "1" + "0" * 60}, "malformed execution report: avg_price"),
        f"{marker}-count": ({"cum_qty": 10**30}, "malformed execution report: cum_qty"),
    }
    messages = [{**fill, **changes, "exec_id": exec_id} for exec_id, (changes, _) in lies.items()]
    # And avg_price 1e400 as a JSON number: the simulator sends it with its text, which json reads as inf.
    number_id = f"{marker}-number"
    raw = json.dumps([*messages, {**fill, "exec_id": number_id, "avg_price": "PLACEHOLDER"}])
    raw = raw.replace('"PLACEHOLDER"', "1e400")
    response = requests.post(
        f"{exchange.url}/admin/feed/raw", data=raw, headers={"Content-Type": "application/json"}, timeout=5
    )
    assert response.status_code == 200, response.text

    queue_url = stack.resources["ExecutionsFailedQueueUrl"]
    reasons = wait_until(quarantined(sqs, queue_url, {*lies, number_id}), timeout_s=60)
    for exec_id, (_, reason) in lies.items():
        assert reasons[exec_id].startswith(reason), (exec_id, reasons[exec_id])
    assert reasons[number_id].startswith("malformed execution report: avg_price")

    # Nothing of the order changed, and every read is still JSON.
    assert reads(stack, order["id"]) == before
