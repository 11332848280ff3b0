"""The runner's DynamoDB Streams event source mapping over a real table on the emulator (moto serves the streams)."""

from __future__ import annotations

import dataclasses
import datetime
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from chalice.app import Chalice, DynamoDBEvent

from devstack import localstack
from devstack.lambda_context import FunctionSpec
from devstack.runner.app_runner import Runner
from devstack.runner.dynamodb_streams import DynamoDBStreamWorker
from devstack.runner.events import dynamodb_stream_record, stream_failure_record
from devstack.runner.options import RunnerOptions
from devstack.runner.retries import RETRY_ATTEMPTS_EXHAUSTED, Discard
from devstack.runner.settings import MappingSettings
from tests.tooling.runner_support import REPORT_FAILURES, wait_for

pytestmark = pytest.mark.integration

FAST = RunnerOptions(shard_refresh_s=0.2, kinesis_idle_wait_s=0.05, error_backoff_s=0.1, retry_backoff_s=0.05)


@pytest.fixture
def table(aws_endpoint: str) -> Iterator[tuple[str, str]]:
    """A table with a NEW_AND_OLD_IMAGES stream: (name, stream ARN)."""
    client = boto3.client("dynamodb")
    name = f"ddb-stream-{uuid.uuid4().hex[:8]}"
    description = client.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]
    yield name, description["LatestStreamArn"]
    client.delete_table(TableName=name)


def put(table_name: str, item_id: str, version: int, **extra: str) -> None:
    item = {"id": {"S": item_id}, "version": {"N": str(version)}, **{k: {"S": v} for k, v in extra.items()}}
    boto3.client("dynamodb").put_item(TableName=table_name, Item=item)


def runner_for(app: Chalice, settings: MappingSettings | None = None) -> Runner:
    options = dataclasses.replace(FAST, checkpoint_table=f"ckpt-{uuid.uuid4().hex[:8]}")
    event_sources = {"handle": settings} if settings else {}
    return Runner(app, options, region="us-east-1", event_sources=event_sources)


def test_changes_reach_the_handler_in_order_and_a_reported_failure_is_delivered_again(table: tuple[str, str]) -> None:
    table_name, stream_arn = table
    app = Chalice(app_name="ddb-unit")
    batches: list[list[tuple[str, str, str | None, str]]] = []
    failed_once: set[str] = set()
    lock = threading.Lock()

    @app.on_dynamodb_record(stream_arn=stream_arn, batch_size=3, starting_position="TRIM_HORIZON")
    def handle(event: DynamoDBEvent) -> dict[str, Any]:
        failures = []
        seen = []
        for record in event:
            assert record.event_source_arn == stream_arn and record.table_name == table_name
            old = record.old_image["version"]["N"] if record.old_image else None
            seen.append((record.event_name, record.new_image["id"]["S"], old, record.new_image["version"]["N"]))
            flaky = record.new_image.get("flaky", {}).get("S") == "yes"
            with lock:
                if flaky and record.sequence_number not in failed_once:
                    failed_once.add(record.sequence_number)
                    failures.append({"itemIdentifier": record.sequence_number})
        with lock:
            batches.append(seen)
        return {"batchItemFailures": failures}

    runner = runner_for(app, MappingSettings.from_json("handle", REPORT_FAILURES))
    (worker,) = runner.workers
    assert isinstance(worker, DynamoDBStreamWorker)
    put(table_name, "a", 1)
    put(table_name, "a", 2, flaky="yes")  # reported failed on its first delivery
    put(table_name, "b", 1)
    put(table_name, "a", 3)
    runner.start()
    try:
        wait_for(lambda: sum(len(batch) for batch in batches) >= 6, "every change, the failed one twice", 20)
        time.sleep(0.5)  # nothing more comes
    finally:
        assert runner.stop(grace_s=5)
    changes = [
        ("INSERT", "a", None, "1"),
        ("MODIFY", "a", "1", "2"),
        ("INSERT", "b", None, "1"),
        ("MODIFY", "a", "2", "3"),
    ]
    # The first batch of three reports its second record; Lambda delivers again from that record on.
    assert batches[0] == changes[:3]
    assert [change for batch in batches[1:] for change in batch] == changes[1:]


def test_latest_skips_what_was_there_and_a_restart_resumes_after_the_checkpoint(
    table: tuple[str, str], aws_endpoint: str
) -> None:
    if localstack.health(aws_endpoint) is not None:
        # Not understood yet (issue 16's note): on LocalStack this runner's LATEST, a moment compared with
        # the records' ApproximateCreationDateTime, passed over a record written a second after it. Our
        # mappings read TRIM_HORIZON (app.py), which the other tests here check on LocalStack as well.
        pytest.skip("LATEST on LocalStack's DynamoDB Streams: open, see issue 16")
    table_name, stream_arn = table
    app = Chalice(app_name="ddb-unit")
    seen: list[str] = []

    @app.on_dynamodb_record(stream_arn=stream_arn, batch_size=10, starting_position="LATEST")
    def handle(event: DynamoDBEvent) -> None:
        seen.extend(record.new_image["id"]["S"] for record in event)

    put(table_name, "before", 1)
    # Stream records carry whole seconds: LATEST keeps the records of its own second, so "before"
    # goes into an earlier one, and "after" into a later one.
    time.sleep(1.1)
    runner = runner_for(app)
    runner.start()
    try:
        wait_for(lambda: runner.workers[0].pollers, "a shard poller", 10)  # type: ignore[attr-defined]
        time.sleep(1.1)
        put(table_name, "after", 1)
        wait_for(lambda: seen == ["after"], "the change made after the start", 10)
    finally:
        assert runner.stop(grace_s=5)
    put(table_name, "while-down", 1)
    again = Runner(app, runner.options, region="us-east-1")
    again.start()
    try:
        wait_for(lambda: seen == ["after", "while-down"], "what changed while the runner was down", 10)
    finally:
        assert again.stop(grace_s=5)


def test_the_record_and_failure_shapes_are_lambdas() -> None:
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-01-01T00:00:00.000"
    created = datetime.datetime(2026, 1, 1, 0, 0, 5, 250_000, tzinfo=datetime.UTC)
    raw: dict[str, Any] = {
        "eventID": "e1",
        "eventName": "MODIFY",
        "eventVersion": "1.0",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": created,
            "Keys": {"id": {"S": "a"}},
            "NewImage": {"id": {"S": "a"}, "blob": {"B": b"\x00\x01"}, "m": {"M": {"bs": {"BS": [b"x"]}}}},
            "OldImage": {"id": {"S": "a"}},
            "SequenceNumber": "1100000000017454423009",
            "SizeBytes": 42,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }
    record = dynamodb_stream_record(raw, arn)
    assert record["eventSourceARN"] == arn and record["eventName"] == "MODIFY"
    assert record["dynamodb"]["ApproximateCreationDateTime"] == created.replace(microsecond=0).timestamp()
    assert record["dynamodb"]["NewImage"]["blob"] == {"B": "AAE="}  # base64 text, as Lambda sends binaries
    assert record["dynamodb"]["NewImage"]["m"] == {"M": {"bs": {"BS": ["eA=="]}}}
    assert raw["dynamodb"]["NewImage"]["blob"] == {"B": b"\x00\x01"}  # the input is left alone

    app = Chalice(app_name="ddb-unit")
    parsed: list[Any] = []

    @app.on_dynamodb_record(stream_arn=arn)
    def handle(event: DynamoDBEvent) -> None:
        parsed.extend(event)

    app.handler_map["handle"]({"Records": [record]}, FunctionSpec("f").new_context())
    (one,) = parsed
    assert (one.sequence_number, one.table_name, one.size_bytes) == ("1100000000017454423009", "t", 42)

    wrapped = {"SequenceNumber": "7", "ApproximateArrivalTimestamp": created, "Record": raw}
    discard = Discard((wrapped,), RETRY_ATTEMPTS_EXHAUSTED, 6, "Unhandled", "req")
    message = stream_failure_record(discard, "shard-1", arn, FunctionSpec("fn"), 0, "DDBStreamBatchInfo")
    assert message["DDBStreamBatchInfo"] == {
        "shardId": "shard-1",
        "startSequenceNumber": "7",
        "endSequenceNumber": "7",
        "approximateArrivalOfFirstRecord": "2026-01-01T00:00:05.250Z",
        "approximateArrivalOfLastRecord": "2026-01-01T00:00:05.250Z",
        "batchSize": 1,
        "streamArn": arn,
    }
