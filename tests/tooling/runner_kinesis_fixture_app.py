"""A Chalice app for the runner's Kinesis tests: data-driven outcomes, and every delivery recorded in DynamoDB."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from typing import Any

import boto3
from chalice.app import Chalice, KinesisEvent

# Read at import, as the real app reads its settings: each runner process a
# test starts gets its own stream, table and run id through the environment.
STREAM_NAME = os.environ.get("RUNNER_KINESIS_STREAM", "runner-fixture-stream")
TABLE_NAME = os.environ.get("RUNNER_FIXTURE_TABLE", "runner-fixture-observations")
RUN_ID = os.environ.get("RUNNER_FIXTURE_RUN_ID", "default")

app = Chalice(app_name="runner-kinesis-fixture")

_local = threading.local()  # shards run on threads of their own; a client each avoids sharing a session
_failed_once: set[str] = set()  # eventIDs of "flaky" records that already failed in this process
_failed_once_lock = threading.Lock()


def _dynamodb() -> Any:
    if not hasattr(_local, "client"):
        _local.client = boto3.session.Session().client("dynamodb")
    return _local.client


def record(kind: str, **data: Any) -> None:
    """One observation the test reads back from the table."""
    _dynamodb().put_item(
        TableName=TABLE_NAME,
        Item={
            "id": {"S": str(uuid.uuid4())},
            "run_id": {"S": RUN_ID},
            "kind": {"S": kind},
            "at": {"N": repr(time.time())},
            "data": {"S": json.dumps(data)},
        },
    )


def _first_failure(event_id: str) -> bool:
    with _failed_once_lock:
        if event_id in _failed_once:
            return False
        _failed_once.add(event_id)
        return True


@app.on_kinesis_record(stream=STREAM_NAME, batch_size=5, starting_position="TRIM_HORIZON")
def ingest(event: KinesisEvent) -> dict[str, Any]:
    """ok*: succeeds; poison: reported failed; flaky: reported failed on its first delivery only;
    raise: fails the whole batch; sleep:S: succeeds after S seconds."""
    records = event.to_dict()["Records"]
    context = event.context
    facts = {"request_id": context.aws_request_id, "function_name": context.function_name, "pid": os.getpid()}
    record("batch", records=records, **facts)
    failures = []
    for item in records:
        data = base64.b64decode(item["kinesis"]["data"]).decode()
        if data == "raise":
            raise RuntimeError("fixture: raise requested")
        if data.startswith("sleep:"):
            time.sleep(float(data.removeprefix("sleep:")))
        if data == "poison" or (data == "flaky" and _first_failure(item["eventID"])):
            failures.append({"itemIdentifier": item["kinesis"]["sequenceNumber"]})
    record("done", event_ids=[item["eventID"] for item in records], **facts)
    return {"batchItemFailures": failures}
