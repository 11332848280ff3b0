"""Execution updates end to end: simulator feed -> bridge -> Kinesis -> runner -> apply_executions -> orders."""

from __future__ import annotations

import base64
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
import requests

from devstack.emulator import emulator_client
from devstack.stack import LocalStack, start_bridge
from tests.e2e.helpers import Exchange, auth, order_in_status
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

ISIN = "DE0007164600"
DONE = ("filled", "canceled", "rejected", "expired", "failed")
# The simulator says "new" where we say "placed"; the rest is spelled alike.
OUR_STATUS = {"new": "placed"}


def post_order(stack: LocalStack, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "market", "side": "buy", "instrument": ISIN, "quantity": 12}
    body.update(changes)
    response = requests.post(f"{stack.api_url}/orders", json=body, headers=auth(stack.api_key), timeout=30)
    assert response.status_code == 201, response.text
    return dict(response.json())


def agrees_with_exchange(stack: LocalStack, exchange: Exchange, order_id: str) -> dict[str, Any] | None:
    """Our order once it shows exactly what the exchange's own record says, else None."""
    record = exchange.record(order_id)
    if record is None or record["execution"] is None or not record["execution"]["done"]:
        return None
    execution = record["execution"]
    ours = requests.get(f"{stack.api_url}/orders/{order_id}", headers=auth(stack.api_key), timeout=10).json()
    expected_price = None if execution["avg_price"] is None else float(Decimal(execution["avg_price"]))
    if (
        ours["status"] == OUR_STATUS.get(execution["status"], execution["status"])
        and ours["filled_quantity"] == execution["cum_qty"]
        and ours["average_fill_price"] == expected_price
    ):
        return dict(ours)
    return None


def executions_as_sent(stack: LocalStack, exchange: Exchange, order_id: str) -> list[dict[str, Any]] | None:
    """The order's executions once they are exactly the ones the exchange's feed carried, else None.

    Not at once when the order agrees: the reconciler may settle an order from
    the exchange's status before its reports arrive; they follow.
    """
    record = exchange.record(order_id)
    listed = requests.get(f"{stack.api_url}/orders/{order_id}/executions", headers=auth(stack.api_key), timeout=10)
    executions: list[dict[str, Any]] = listed.json()["executions"]
    sent = (record or {}).get("execution") or {}
    return executions if [e["id"] for e in executions] == sent.get("exec_ids") else None


def test_a_market_order_is_placed_filled_and_lists_its_executions(stack: LocalStack, exchange: Exchange) -> None:
    exchange.configure(reject_rate=0.0, cancel_rate=0.0)
    order = post_order(stack, quantity=30)
    final = wait_until(lambda: agrees_with_exchange(stack, exchange, order["id"]), timeout_s=60)
    assert final["status"] == "filled"
    assert final["filled_quantity"] == 30
    assert final["remaining_quantity"] == 0
    assert final["average_fill_price"] > 0
    assert final["placed_at"] is not None

    listed = wait_until(lambda: executions_as_sent(stack, exchange, order["id"]))
    assert listed[0]["type"] == "new"
    assert listed[-1]["type"] == "fill"
    assert sum(e["quantity"] for e in listed) == 30
    assert [e["time"] for e in listed] == sorted(e["time"] for e in listed)


def test_executions_of_an_unknown_order_are_404(stack: LocalStack) -> None:
    response = requests.get(
        f"{stack.api_url}/orders/{uuid.uuid4()}/executions", headers=auth(stack.api_key), timeout=10
    )
    assert response.status_code == 404


def test_with_a_duplicating_reordering_feed_every_order_ends_as_the_exchange_says(
    stack: LocalStack, exchange: Exchange
) -> None:
    exchange.configure(feed_duplicate_rate=0.3, feed_reorder_rate=0.3, reject_rate=0.1, cancel_rate=0.2)
    orders = [post_order(stack, quantity=5 + i) for i in range(6)]
    orders += [post_order(stack, type="limit", quantity=8, limit_price=400 + i) for i in range(4)]
    for order in orders:
        wait_until(lambda order=order: agrees_with_exchange(stack, exchange, order["id"]), timeout_s=90)


def test_killing_the_bridge_mid_stream_loses_nothing_and_counts_nothing_twice(
    stack: LocalStack, exchange: Exchange, tmp_path: Any
) -> None:
    exchange.configure(reject_rate=0.0, cancel_rate=0.0, exec_delay_s=0.2)
    bridge = stack.process("bridge")
    orders = [post_order(stack, quantity=20 + i) for i in range(5)]
    wait_until(order_in_status(stack, orders[0]["id"], "placed", "partially_filled", "filled"))
    bridge.kill()
    more = [post_order(stack, quantity=10 + i) for i in range(3)]  # reported while no bridge runs
    restarted = start_bridge(stack.env, (tmp_path / "bridge.log").open("wb"))
    stack.processes[stack.processes.index(bridge)] = restarted
    for order in orders + more:
        final = wait_until(lambda order=order: agrees_with_exchange(stack, exchange, order["id"]), timeout_s=90)
        listed = wait_until(lambda order=order: executions_as_sent(stack, exchange, order["id"]), timeout_s=90)
        assert sum(e["quantity"] for e in listed) == final["filled_quantity"]


def test_a_poison_record_goes_to_the_failed_queue_and_later_records_still_apply(
    stack: LocalStack, exchange: Exchange
) -> None:
    exchange.configure(reject_rate=0.0, cancel_rate=0.0)
    kinesis = emulator_client("kinesis", stack.endpoint_url)
    sqs = emulator_client("sqs", stack.endpoint_url)
    marker = f"poison-{uuid.uuid4()}"
    order = post_order(stack, quantity=7)
    # Same partition key as the order's real reports: same shard, before them.
    kinesis.put_record(
        StreamName=stack.resources["ExecutionsStreamName"],
        PartitionKey=order["id"],
        Data=json.dumps({"seq": "x", "exec_id": marker}).encode(),
    )
    wait_until(lambda: agrees_with_exchange(stack, exchange, order["id"]), timeout_s=60)

    queue_url = sqs.get_queue_url(QueueName=stack.resources["ExecutionsFailedQueueName"])["QueueUrl"]

    def poisoned() -> dict[str, Any] | None:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            body = json.loads(message["Body"])
            if marker in base64.b64decode(body["data"]).decode():
                return dict(body)
        return None

    found = wait_until(poisoned, timeout_s=30)
    assert "malformed execution report" in found["reason"]
    assert found["partitionKey"] == order["id"]
