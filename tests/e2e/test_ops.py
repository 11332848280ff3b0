"""The operator tool end to end: `python -m ops` as a real process against the running local stack."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.adapters.queue import placement_message
from chalicelib.domain.model import order_id_for_client_key
from devstack.emulator import emulator_client
from devstack.stack import DEMO_ACCOUNT, LocalStack
from tests.e2e.helpers import Exchange, auth, order_in_status
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ISIN = "US0378331005"
SETTLED = ("placed", "partially_filled", "filled", "canceled", "rejected", "expired")
# Knobs earlier tests may have left on; these tests want plain fills.
CALM = {
    "reject_rate": 0.0,
    "cancel_rate": 0.0,
    "feed_duplicate_rate": 0.0,
    "feed_reorder_rate": 0.0,
    "failure_rate": 0.0,
}


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard, not a performance bound
        check=False,
    )


def ops(stack: LocalStack, *args: str, expect: int = 0) -> dict[str, Any]:
    """Run the CLI as an operator would, with the stack's environment; its JSON answer."""
    completed = run_cli(stack.env, *args, "--json")
    assert completed.returncode == expect, f"exit {completed.returncode}\n{completed.stdout}\n{completed.stderr}"
    return dict(json.loads(completed.stdout))


@pytest.fixture
def calm_exchange(exchange: Exchange) -> Iterator[Exchange]:
    saved = requests.get(f"{exchange.url}/admin/config", timeout=5).json()
    exchange.configure(**CALM)
    yield exchange
    exchange.configure(**{key: saved[key] for key in CALM})


def post_order(stack: LocalStack, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "market", "side": "buy", "instrument": ISIN, "quantity": 6}
    body.update(changes)
    response = requests.post(f"{stack.api_url}/orders", json=body, headers=auth(stack.api_key), timeout=30)
    assert response.status_code == 201, response.text
    return dict(response.json())


def dlq_order_ids(stack: LocalStack) -> list[str]:
    view = ops(stack, "dlq", "--limit", "200")
    return [m["order_id"] for m in view["orders_dlq"]["messages"]]


def executions_of(stack: LocalStack, order_id: str) -> list[dict[str, Any]]:
    response = requests.get(f"{stack.api_url}/orders/{order_id}/executions", headers=auth(stack.api_key), timeout=10)
    return list(response.json()["executions"]) if response.status_code == 200 else []


def exchange_done(exchange: Exchange, order_id: str) -> dict[str, Any] | None:
    record = exchange.record(order_id)
    return record if record and record["execution"] and record["execution"]["done"] else None


class StatusWatcher:
    """Samples an order's status over HTTP in the background, to see a short-lived status go by."""

    def __init__(self, stack: LocalStack, order_id: str) -> None:
        self.url = f"{stack.api_url}/orders/{order_id}"
        self.headers = auth(stack.api_key)
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            status = requests.get(self.url, headers=self.headers, timeout=5).json()["status"]
            if not self.seen or self.seen[-1] != status:
                self.seen.append(status)

    def __enter__(self) -> StatusWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_dead_lettered_order_is_reopened_placed_once_and_a_second_redrive_changes_nothing(
    stack: LocalStack, calm_exchange: Exchange
) -> None:
    calm_exchange.configure(failure_rate=1.0)
    order_id = post_order(stack)["id"]
    wait_until(order_in_status(stack, order_id, "failed"), timeout_s=60)
    wait_until(lambda: order_id in dlq_order_ids(stack), timeout_s=60)

    # A market order: reopened only when named (see the test after this one).
    dry = ops(stack, "redrive", "--dry-run", "--allow-market", order_id)
    assert [i["action"] for i in dry["placement"]["items"] if i["order_id"] == order_id] == ["reopened"]
    assert (
        requests.get(f"{stack.api_url}/orders/{order_id}", headers=auth(stack.api_key), timeout=5).json()["status"]
        == "failed"
    )
    assert order_id in dlq_order_ids(stack)

    # The exchange works again, slowly: the reopened order stays pending
    # through the exchange call, long enough for the watcher to see it.
    calm_exchange.configure(failure_rate=0.0, latency_s=2.0)
    with StatusWatcher(stack, order_id) as watcher:
        first = ops(stack, "redrive", "--allow-market", order_id)
        mine = [i for i in first["placement"]["items"] if i["order_id"] == order_id]
        assert [i["action"] for i in mine] == ["reopened"], first
        settled = wait_until(order_in_status(stack, order_id, *SETTLED, "failed"), timeout_s=60)
    assert settled["status"] != "failed", settled
    assert watcher.seen[:2] == ["failed", "pending"], watcher.seen
    record = calm_exchange.record(order_id)
    assert record is not None
    assert (record["failures"], record["accepted"]) == (3, 1)
    assert order_id not in dlq_order_ids(stack)

    before = ops(stack, "order", order_id)["order"]
    second = ops(stack, "redrive", "--allow-market", order_id)
    assert [i for i in second["placement"]["items"] if i["order_id"] == order_id] == []
    reopened = {i["order_id"] for i in first["placement"]["items"] if i["action"] == "reopened"}
    assert reopened.isdisjoint(i["order_id"] for i in second["placement"]["items"] if i["action"] == "reopened")
    after = ops(stack, "order", order_id)["order"]
    assert {k: after[k] for k in ("attempts", "placed_at", "exchange_order_id", "created_at")} == {
        k: before[k] for k in ("attempts", "placed_at", "exchange_order_id", "created_at")
    }
    assert after["attempts"] == 1  # the reopened order started its attempts afresh
    record = calm_exchange.record(order_id)
    assert record is not None
    assert record["accepted"] == 1


def placement_items(result: dict[str, Any], *order_ids: str) -> dict[str, dict[str, Any]]:
    return {i["order_id"]: i for i in result["placement"]["items"] if i["order_id"] in order_ids}


@pytest.mark.moto_only  # redrive's policy; the DLQ round trip is the test above
def test_redrive_refuses_old_orders_and_unnamed_market_orders_and_records_each_reopening(
    stack: LocalStack, calm_exchange: Exchange
) -> None:
    calm_exchange.configure(failure_rate=1.0)
    limit_id = post_order(stack, type="limit", limit_price=187.25)["id"]
    market_id = post_order(stack)["id"]
    for order_id in (limit_id, market_id):
        wait_until(order_in_status(stack, order_id, "failed"), timeout_s=60)
    wait_until(lambda: {limit_id, market_id} <= set(dlq_order_ids(stack)), timeout_s=60)
    calm_exchange.configure(failure_rate=0.0)
    time.sleep(2)  # both are older than the --max-age below

    # Older than the operator's max age: both refused, each with its reason, and left as they are.
    old = placement_items(ops(stack, "redrive", "--max-age", "2s", "--operator", "e2e-operator"), limit_id, market_id)
    assert {order_id: item["action"] for order_id, item in old.items()} == {limit_id: "refused", market_id: "refused"}
    assert all("older than --max-age 2s" in item["detail"] for item in old.values()), old
    # Within the default (the trading session): the limit order reopens, the market order needs naming.
    session = placement_items(ops(stack, "redrive", "--operator", "e2e-operator"), limit_id, market_id)
    assert session[limit_id]["action"] == "reopened", session
    assert session[market_id]["action"] == "refused"
    assert f"--allow-market {market_id}" in session[market_id]["detail"]
    assert our_order(stack, market_id)["status"] == "failed"
    named = placement_items(ops(stack, "redrive", "--allow-market", market_id, "--operator", "e2e-operator"), market_id)
    assert named[market_id]["action"] == "reopened", named

    for order_id in (limit_id, market_id):
        wait_until(order_in_status(stack, order_id, *SETTLED), timeout_s=60)
        view = ops(stack, "order", order_id)
        assert [r["by"] for r in view["order"]["reopenings"]] == ["e2e-operator"]
        reopened = [e for e in view["history"] if e["event"] == "reopened"]
        assert len(reopened) == 1 and reopened[0]["detail"].startswith("by e2e-operator;"), view["history"]
        # Clients see when it was reopened, not by whom, nor the exchange's error text.
        response = requests.get(f"{stack.api_url}/orders/{order_id}", headers=auth(stack.api_key), timeout=5)
        assert response.json()["reopened_at"] == reopened[0]["at"]
        assert "e2e-operator" not in response.text
        human = run_cli(stack.env, "order", order_id)
        assert human.returncode == 0, human.stderr
        assert "reopened" in human.stdout and "e2e-operator" in human.stdout


def our_order(stack: LocalStack, order_id: str) -> dict[str, Any]:
    return dict(requests.get(f"{stack.api_url}/orders/{order_id}", headers=auth(stack.api_key), timeout=5).json())


@pytest.mark.moto_only  # the CLI's view of stored items
def test_order_shows_the_stored_order_its_attempts_executions_and_history(
    stack: LocalStack, calm_exchange: Exchange
) -> None:
    calm_exchange.configure(failure_rate=1.0)
    order_id = post_order(stack, quantity=9)["id"]
    # One failed attempt, then the exchange recovers before the retry (1 s later at the least).
    wait_until(lambda: (calm_exchange.record(order_id) or {}).get("failures", 0) >= 1, interval_s=0.05)
    calm_exchange.configure(failure_rate=0.0)
    record = wait_until(lambda: exchange_done(calm_exchange, order_id), timeout_s=60)
    exec_ids = record["execution"]["exec_ids"]
    wait_until(lambda: len(executions_of(stack, order_id)) == len(exec_ids), timeout_s=60)
    wait_until(order_in_status(stack, order_id, "filled"), timeout_s=60)

    view = ops(stack, "order", order_id)
    order = view["order"]
    assert order["id"] == order_id
    assert order["status"] == "filled"
    assert order["quantity"] == 9
    assert order["attempts"] == record["failures"] + 1
    assert order["last_error"]
    assert order["placed_at"] is not None
    assert [e["exec_id"] for e in view["executions"]] == exec_ids
    assert [e["time"] for e in view["executions"]] == sorted(e["time"] for e in view["executions"])
    assert view["executions"][-1]["type"] == "fill"
    events = [event["event"] for event in view["history"]]
    assert events[0] == "created"
    assert "placed" in events
    assert events.count("fill") == 1
    assert [e["at"] for e in view["history"]] == sorted(e["at"] for e in view["history"])
    assert view["dead_letters"] == []

    unknown = ops(stack, "order", str(uuid.uuid4()), expect=1)
    assert "not found" in unknown["error"]


def test_queues_reports_depths_and_stream_shards(stack: LocalStack, calm_exchange: Exchange) -> None:
    sqs = emulator_client("sqs", stack.endpoint_url)
    dlq_url = stack.resources["OrdersDeadLetterQueueUrl"]
    # A dead letter for a placed order, held in flight by this test while
    # `queues` counts (nothing else consumes the DLQ); a redrive that met it
    # would find nothing to reopen.
    order_id = post_order(stack)["id"]
    wait_until(order_in_status(stack, order_id, *SETTLED), timeout_s=60)
    sent = sqs.send_message(QueueUrl=dlq_url, MessageBody=placement_message(order_id))

    def hold_mine() -> str | None:
        for message in sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=300
        ).get("Messages", []):
            if message["MessageId"] == sent["MessageId"]:
                return str(message["ReceiptHandle"])
            sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
        return None

    receipt = wait_until(hold_mine, timeout_s=60)
    try:
        view = ops(stack, "queues")
    finally:
        sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=receipt)
    queues = view["queues"]
    assert queues["orders"]["name"] == stack.resources["OrdersQueueName"]
    assert queues["orders_dlq"]["name"] == stack.resources["OrdersDeadLetterQueueName"]
    assert queues["executions_failed"]["name"] == stack.resources["ExecutionsFailedQueueName"]
    for depth in queues.values():
        assert all(isinstance(depth[k], int) and depth[k] >= 0 for k in ("visible", "in_flight", "delayed"))
    assert queues["orders_dlq"]["in_flight"] >= 1
    stream = view["stream"]
    assert stream["name"] == stack.resources["ExecutionsStreamName"]
    assert stream["open_shards"] == 2  # ExecutionsShardCount's default
    assert len({shard["shard_id"] for shard in stream["shards"]}) == 2

    human = run_cli(stack.env, "queues")
    assert human.returncode == 0, human.stderr
    assert stack.resources["OrdersDeadLetterQueueName"] in human.stdout


def report(order_id: str, exec_id: str, exec_type: str, last_qty: int, cum_qty: int, leaves_qty: int) -> bytes:
    """An execution report as the feed bridge puts it on the stream (docs/execution-feed.md)."""
    price = "100.00" if last_qty else None
    return json.dumps(
        {
            "seq": 1,
            "exec_id": exec_id,
            "client_order_id": order_id,
            # One venue id per order, as a venue gives: two would be quarantined as implausible.
            "exchange_order_id": f"X-{order_id}",
            "exec_type": exec_type,
            "last_qty": last_qty,
            "last_price": price,
            "cum_qty": cum_qty,
            "leaves_qty": leaves_qty,
            "avg_price": "100.00" if cum_qty else None,
            "transact_time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
    ).encode()


def take_parked(sqs: Any, queue_url: str, order_id: str, taken: set[str]) -> set[str]:
    """Delete the executions-failed messages the handler parked for order_id, leave the others; all taken so far."""
    for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
        "Messages", []
    ):
        if json.loads(message["Body"]).get("partitionKey") == order_id:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            taken.add(message["MessageId"])
        else:
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
    return taken


def test_an_on_failure_batch_record_is_redriven_from_the_stream_and_its_records_applied(
    stack: LocalStack, calm_exchange: Exchange
) -> None:
    kinesis = emulator_client("kinesis", stack.endpoint_url)
    sqs = emulator_client("sqs", stack.endpoint_url)
    stream = stack.resources["ExecutionsStreamName"]
    failed_url = stack.resources["ExecutionsFailedQueueUrl"]
    client_key = f"ops-{uuid.uuid4()}"
    order_id = order_id_for_client_key(DEMO_ACCOUNT, client_key)  # known before the order exists
    marker = f"ops-batch-{uuid.uuid4()}"
    put = kinesis.put_records(
        StreamName=stream,
        Records=[
            {"PartitionKey": order_id, "Data": report(order_id, f"{marker}-1", "new", 0, 0, 6)},
            {"PartitionKey": order_id, "Data": report(order_id, f"{marker}-2", "partial_fill", 1, 1, 5)},
        ],
    )
    assert put["FailedRecordCount"] == 0
    shard_ids = {r["ShardId"] for r in put["Records"]}
    assert len(shard_ids) == 1  # one partition key, one shard
    sequence_numbers = sorted((r["SequenceNumber"] for r in put["Records"]), key=int)

    # The consumer parks both as "unknown order". Take those copies away: only
    # the on-failure record below may bring the records back.
    taken: set[str] = set()
    wait_until(lambda: len(take_parked(sqs, failed_url, order_id, taken)) == 2, timeout_s=60)

    # The exchange stays down, so the order never gets a venue id of its own
    # that these reports' id would contradict.
    calm_exchange.configure(failure_rate=1.0)
    post_order(stack, client_order_id=client_key)  # the order exists from here on
    stream_arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    on_failure = {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:brokerage-orders-local-apply_executions",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 4,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": now,
        "KinesisBatchInfo": {
            "shardId": shard_ids.pop(),
            "startSequenceNumber": sequence_numbers[0],
            "endSequenceNumber": sequence_numbers[-1],
            "approximateArrivalOfFirstRecord": now,
            "approximateArrivalOfLastRecord": now,
            "batchSize": 2,
            "streamArn": stream_arn,
        },
    }
    message_id = sqs.send_message(QueueUrl=failed_url, MessageBody=json.dumps(on_failure))["MessageId"]

    result = ops(stack, "redrive")
    items = [i for i in result["executions"]["items"] if i["message_id"] == message_id]
    assert len(items) == 1, result
    assert items[0]["action"] == "redriven"
    assert items[0]["records"] >= 2  # records of other orders in between come along, harmlessly

    wanted = {f"{marker}-1", f"{marker}-2"}
    wait_until(lambda: wanted <= {e["id"] for e in executions_of(stack, order_id)}, timeout_s=60)
    view = ops(stack, "order", order_id)
    assert wanted <= {e["exec_id"] for e in view["executions"]}
    remaining = ops(stack, "dlq", "--limit", "200")["executions_failed"]["messages"]
    assert message_id not in {m["message_id"] for m in remaining}


def test_a_parked_report_is_put_back_once_its_order_exists_and_a_malformed_one_is_kept(
    stack: LocalStack, calm_exchange: Exchange
) -> None:
    kinesis = emulator_client("kinesis", stack.endpoint_url)
    sqs = emulator_client("sqs", stack.endpoint_url)
    client_key = f"ops-{uuid.uuid4()}"
    order_id = order_id_for_client_key(DEMO_ACCOUNT, client_key)
    exec_id = f"ops-parked-{uuid.uuid4()}"
    kinesis.put_records(
        StreamName=stack.resources["ExecutionsStreamName"],
        Records=[
            {"PartitionKey": order_id, "Data": report(order_id, exec_id, "new", 0, 0, 6)},
            {"PartitionKey": order_id, "Data": json.dumps({"exec_id": exec_id, "seq": "x"}).encode()},
        ],
    )

    def parked() -> list[dict[str, Any]] | None:
        messages = ops(stack, "dlq", "--limit", "200")["executions_failed"]["messages"]
        mine = [m for m in messages if m["kind"] == "report" and m["order_id"] == order_id]
        return mine if len(mine) == 2 else None

    by_reason = {
        "unknown" if m["reason"].startswith("unknown order") else "malformed": m
        for m in wait_until(parked, timeout_s=60)
    }
    assert set(by_reason) == {"unknown", "malformed"}

    early = ops(stack, "redrive")  # the order does not exist yet: both stay
    actions = {i["message_id"]: i["action"] for i in early["executions"]["items"]}
    assert actions[by_reason["unknown"]["message_id"]] == "kept"
    assert actions[by_reason["malformed"]["message_id"]] == "kept"

    calm_exchange.configure(failure_rate=1.0)  # as above: no venue id of the exchange's own
    post_order(stack, client_order_id=client_key)
    result = ops(stack, "redrive")
    actions = {i["message_id"]: i["action"] for i in result["executions"]["items"]}
    assert actions[by_reason["unknown"]["message_id"]] == "redriven"
    assert actions[by_reason["malformed"]["message_id"]] == "kept"
    wait_until(lambda: exec_id in {e["id"] for e in executions_of(stack, order_id)}, timeout_s=60)
    still = {m["message_id"] for m in ops(stack, "dlq", "--limit", "200")["executions_failed"]["messages"]}
    assert by_reason["malformed"]["message_id"] in still
    assert by_reason["unknown"]["message_id"] not in still

    # Tidy the shared queue: the malformed report would be kept by every later redrive.
    taken: set[str] = set()
    failed_url = stack.resources["ExecutionsFailedQueueUrl"]
    wait_until(lambda: take_parked(sqs, failed_url, order_id, taken), timeout_s=60)


@pytest.mark.moto_only  # the CLI's error
def test_a_local_stage_that_is_not_running_fails_with_a_clear_message(stack: LocalStack) -> None:
    env = {**stack.env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    completed = run_cli(env, "queues")
    assert completed.returncode == 2
    assert "local stack is not running" in completed.stderr
