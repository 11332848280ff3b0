"""A Chalice app for the runner's tests: body-driven outcomes, and every invocation recorded in DynamoDB."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from chalice.app import Chalice, CloudWatchEvent, Rate, SQSEvent

# Read at import, as the real app reads its settings: each runner process a
# test starts gets its own queue, table and run id through the environment.
QUEUE_NAME = os.environ.get("RUNNER_FIXTURE_QUEUE", "runner-fixture-queue")
TABLE_NAME = os.environ.get("RUNNER_FIXTURE_TABLE", "runner-fixture-observations")
RUN_ID = os.environ.get("RUNNER_FIXTURE_RUN_ID", "default")
# The mapping's ScalingConfig.MaximumConcurrency: the most batches the runner may run at once.
MAXIMUM_CONCURRENCY = 3

app = Chalice(app_name="runner-fixture")
logger = Logger(service="runner-fixture")

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


class RunningCount:
    """Invocations of consume in progress in this process: one per concurrent batch the runner delivers."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def enter(self) -> int:
        with self.lock:
            self.count += 1
            return self.count

    def leave(self) -> None:
        with self.lock:
            self.count -= 1


_running = RunningCount()


def _client(service: str) -> Any:
    # Handlers may run on several runner threads at once; boto3's default
    # session is not thread-safe, so clients are created under a lock.
    with _clients_lock:
        if service not in _clients:
            _clients[service] = boto3.session.Session().client(service)
        return _clients[service]


def record(kind: str, **data: Any) -> None:
    """One observation the test reads back from the table."""
    _client("dynamodb").put_item(
        TableName=TABLE_NAME,
        Item={
            "id": {"S": str(uuid.uuid4())},
            "run_id": {"S": RUN_ID},
            "kind": {"S": kind},
            "at": {"N": repr(time.time())},
            "data": {"S": json.dumps(data)},
        },
    )


def _context_facts(context: Any) -> dict[str, Any]:
    return {
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }


@app.on_sqs_message(queue=QUEUE_NAME, batch_size=5, maximum_concurrency=MAXIMUM_CONCURRENCY)
def consume(event: SQSEvent) -> dict[str, Any]:
    """ok: succeeds; fail: reported failed, visible again at once; raise: fails the batch; sleep:S: slow ok."""
    running = _running.enter()
    try:
        return _consume(event, running)
    finally:
        _running.leave()


def _consume(event: SQSEvent, running: int) -> dict[str, Any]:
    records = event.to_dict()["Records"]
    facts = _context_facts(event.context)
    batch = [{k: v for k, v in r.items() if k != "receiptHandle"} for r in records]
    record("batch", records=batch, running=running, **facts)
    sqs = _client("sqs")
    failures = []
    for item in records:
        body = item["body"]
        if body == "raise":
            raise RuntimeError("fixture: raise requested")
        if body.startswith("sleep:"):
            time.sleep(float(body.removeprefix("sleep:")))
        if body == "fail":
            queue_url = sqs.get_queue_url(QueueName=item["eventSourceARN"].rsplit(":", 1)[-1])["QueueUrl"]
            sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=item["receiptHandle"], VisibilityTimeout=0)
            failures.append({"itemIdentifier": item["messageId"]})
    record("done", **facts)
    return {"batchItemFailures": failures}


@logger.inject_lambda_context
def _on_tick(event: dict[str, Any], context: Any) -> None:
    record("schedule", event=event, **_context_facts(context))


@app.schedule(Rate(1, unit=Rate.MINUTES))
def tick(event: CloudWatchEvent) -> None:
    # Wrapped rather than stacked (STACK_NOTES): Powertools must accept the runner's context.
    _on_tick(event.to_dict(), event.context)
