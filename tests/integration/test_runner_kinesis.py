"""The runner's Kinesis event source mapping: event shape and retry rules, then the real process on the emulator."""

from __future__ import annotations

import base64
import datetime
import itertools
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice.app import Chalice

from devstack.lambda_context import FunctionSpec
from devstack.processes import ManagedProcess, python_module
from devstack.runner import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    BatchVerdict,
    CheckpointStore,
    Discard,
    FailureDestination,
    Invocation,
    KinesisShardPoller,
    KinesisSource,
    KinesisStreamWorker,
    LocalFunction,
    Runner,
    RunnerOptions,
    Segment,
    SourceUnavailable,
    StreamFailure,
    StreamInfo,
    StreamRetryPolicy,
    expire_records,
    kinesis_event,
    kinesis_failure_record,
    lambda_verdict,
    plan_stream_retry,
    retry_backoff_s,
    stream_failure,
)
from tests.integration.test_runner import DEADLINE_S, REPO_ROOT, RunningRunner, observed, wait_for

pytestmark = pytest.mark.integration

FIXTURE_APP = "tests.integration.runner_kinesis_fixture_app:app"
FUNCTION_NAME = "runner-kinesis-fixture-dev-ingest"
ROLE_ARN = "arn:aws:iam::123456789012:role/runner-kinesis-fixture-dev"
DESTINATION_OUTPUT = "FixtureFailedQueueArn"
# ExplicitHashKey values inside each half of the hash key space: shard 0 and shard 1 of a 2-shard stream.
SHARD_HASH_KEYS = ("0", str(2**127))
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s"


def kinesis_records(*sequence_numbers: int, arrival: float = 1_700_000_000.0, data: str = "ok") -> tuple[Any, ...]:
    """GetRecords result records, as boto3 returns them."""
    return tuple(
        {
            "SequenceNumber": str(number),
            "ApproximateArrivalTimestamp": datetime.datetime.fromtimestamp(arrival + index, datetime.UTC),
            "Data": f"{data}-{number}".encode(),
            "PartitionKey": f"pk-{number}",
        }
        for index, number in enumerate(sequence_numbers)
    )


def numbers(segment: Segment) -> list[int]:
    return [int(n) for n in segment.sequence_numbers]


# --- Unit level: no emulator ---


@pytest.mark.unit
def test_kinesis_event_has_the_lambda_shape() -> None:
    (record,) = kinesis_records(7, arrival=1_545_084_650.987)
    event = kinesis_event([record], "shardId-000000000001", STREAM_ARN, "us-east-1", ROLE_ARN)
    assert event == {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "pk-7",
                    "sequenceNumber": "7",
                    "data": base64.b64encode(b"ok-7").decode(),
                    "approximateArrivalTimestamp": 1_545_084_650.987,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": "shardId-000000000001:7",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": ROLE_ARN,
                "awsRegion": "us-east-1",
                "eventSourceARN": STREAM_ARN,
            }
        ]
    }


@pytest.mark.unit
def test_chalice_reads_the_kinesis_event_the_runner_builds() -> None:
    app = Chalice(app_name="unit")
    seen: list[tuple[bytes, str, str]] = []

    @app.on_kinesis_record(stream="s")
    def handle(event: Any) -> None:
        seen.extend((r.data, r.sequence_number, r.partition_key) for r in event)

    event = kinesis_event(kinesis_records(1, 2), "shardId-000000000000", STREAM_ARN, "us-east-1", ROLE_ARN)
    app.handler_map["handle"](event, FunctionSpec("f").new_context())
    assert seen == [(b"ok-1", "1", "pk-1"), (b"ok-2", "2", "pk-2")]


@pytest.mark.unit
def test_the_failure_record_has_the_shape_lambda_sends_to_an_on_failure_destination() -> None:
    records = kinesis_records(41, 42, 43, arrival=1_700_000_000.5)
    spec = FunctionSpec("app-dev-fn")
    discard = Discard(records, RETRY_ATTEMPTS_EXHAUSTED, 4, "Unhandled", "req-1")
    message = kinesis_failure_record(discard, "shardId-000000000001", STREAM_ARN, spec, 1_700_000_100.25)
    assert message == {
        "requestContext": {
            "requestId": "req-1",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:app-dev-fn",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 4,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2023-11-14T22:15:00.250Z",
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000001",
            "startSequenceNumber": "41",
            "endSequenceNumber": "43",
            "approximateArrivalOfFirstRecord": "2023-11-14T22:13:20.500Z",
            "approximateArrivalOfLastRecord": "2023-11-14T22:13:22.500Z",
            "batchSize": 3,
            "streamArn": STREAM_ARN,
        },
    }
    reported = kinesis_failure_record(replace(discard, function_error=None), "s", STREAM_ARN, spec, 0)
    assert "functionError" not in reported["responseContext"]  # a reported failure is no function error
    never_invoked = kinesis_failure_record(Discard(records, RECORD_AGE_EXCEEDED, 0), "s", STREAM_ARN, spec, 0)
    assert "responseContext" not in never_invoked
    assert never_invoked["requestContext"]["requestId"]


@pytest.mark.unit
def test_a_reported_failure_checkpoints_before_the_lowest_sequence_number_compared_as_numbers() -> None:
    segment = Segment(kinesis_records(8, 9, 10, 11))
    verdict = BatchVerdict(frozenset({"11", "10", "9"}))  # as text "10" < "9"; as numbers 9 is lowest
    failure = stream_failure(verdict, segment.sequence_numbers, "req")
    assert failure is not None and failure.first_failed == 1 and failure.function_error is None
    plan = plan_stream_retry(segment, failure, StreamRetryPolicy())
    assert plan.checkpoint == "8"
    (retry,) = plan.next
    assert numbers(retry) == [9, 10, 11]
    assert (retry.invocations, retry.retries) == (1, 1)
    assert stream_failure(BatchVerdict(frozenset()), segment.sequence_numbers, "req") is None
    assert plan_stream_retry(segment, None, StreamRetryPolicy()).checkpoint == "11"


@pytest.mark.unit
def test_a_failed_batch_is_retried_whole_until_the_retry_limit_then_discarded() -> None:
    policy = StreamRetryPolicy(maximum_retry_attempts=2)
    segment = Segment(kinesis_records(1, 2, 3))
    error = StreamFailure(0, "Unhandled", "req", bisectable=True)
    invocations = 0
    while True:
        plan = plan_stream_retry(segment, error, policy)
        invocations += 1
        if plan.discard is not None:
            break
        (segment,) = plan.next
        assert numbers(segment) == [1, 2, 3] and plan.checkpoint is None
    assert invocations == 3  # the first attempt and two retries
    assert plan.discard.condition == RETRY_ATTEMPTS_EXHAUSTED and plan.discard.invocations == 3
    assert plan.checkpoint == "3" and plan.next == ()  # past the discarded records: the shard moves on
    unlimited = plan_stream_retry(Segment(kinesis_records(1), retries=10_000), error, StreamRetryPolicy())
    assert unlimited.discard is None and unlimited.next[0].retries == 10_001


@pytest.mark.unit
def test_bisecting_isolates_a_bad_record_without_consuming_retries() -> None:
    policy = StreamRetryPolicy(bisect_on_function_error=True, maximum_retry_attempts=0)
    bad = 3
    work = [Segment(kinesis_records(1, 2, 3, 4, 5))]
    delivered: list[list[int]] = []
    discarded: list[Discard] = []
    checkpoints: list[str] = []
    while work:
        segment = work.pop(0)
        delivered.append(numbers(segment))
        failure = StreamFailure(0, "Unhandled", "req", True) if bad in numbers(segment) else None
        plan = plan_stream_retry(segment, failure, policy)
        work[0:0] = plan.next
        discarded += [plan.discard] if plan.discard else []
        checkpoints += [plan.checkpoint] if plan.checkpoint else []
    assert delivered == [[1, 2, 3, 4, 5], [1, 2], [3, 4, 5], [3], [4, 5]]
    (discard,) = discarded
    assert [r["SequenceNumber"] for r in discard.records] == ["3"]
    assert discard.invocations == 3 and discard.function_error == "Unhandled"
    assert checkpoints == ["2", "3", "5"]  # in order: every record done with exactly once


@pytest.mark.unit
def test_a_reported_failure_is_not_bisected_even_with_bisect_on() -> None:
    policy = StreamRetryPolicy(bisect_on_function_error=True)
    segment = Segment(kinesis_records(1, 2, 3))
    first_record = StreamFailure(0, None, "req", bisectable=False)  # the handler reported the first record
    (retry,) = plan_stream_retry(segment, first_record, policy).next
    assert numbers(retry) == [1, 2, 3] and retry.retries == 1
    invalid_report = StreamFailure(0, None, "req", bisectable=True)  # a report Lambda rejects fails the batch
    assert [numbers(half) for half in plan_stream_retry(segment, invalid_report, policy).next] == [[1], [2, 3]]


@pytest.mark.unit
def test_records_past_the_maximum_age_are_split_off_before_delivery() -> None:
    segment = Segment(kinesis_records(1, 2, 3, arrival=1000.0), invocations=2, function_error="Unhandled")
    kept, expired = expire_records(segment, now_s=1060.5, maximum_record_age_s=60)  # ages 60.5, 59.5, 58.5
    assert kept is not None and numbers(kept) == [2, 3] and kept.invocations == 2
    assert expired is not None and expired.condition == RECORD_AGE_EXCEEDED and len(expired.records) == 1
    assert expired.invocations == 2
    assert expire_records(segment, now_s=2000, maximum_record_age_s=60)[0] is None
    assert expire_records(segment, now_s=2000, maximum_record_age_s=None) == (segment, None)


@pytest.mark.unit
def test_retry_backoff_doubles_up_to_a_cap_and_a_bisected_half_goes_at_once() -> None:
    assert [retry_backoff_s(n, 0.5, 5) for n in range(6)] == [0, 0.5, 1, 2, 4, 5]


@pytest.mark.unit
def test_a_failure_verdict_on_stream_records_tells_errors_from_reports() -> None:
    seqs = ["5", "6"]
    raised = stream_failure(lambda_verdict(Invocation(error=RuntimeError("x")), seqs, True), seqs, "r")
    assert raised is not None and raised.bisectable and raised.function_error == "Unhandled"
    unknown = {"batchItemFailures": [{"itemIdentifier": "7"}]}  # not in the batch: the whole batch failed
    rejected = stream_failure(lambda_verdict(Invocation(result=unknown), seqs, True), seqs, "r")
    assert rejected is not None and rejected.first_failed == 0 and rejected.function_error is None
    ignored = {"batchItemFailures": [{"itemIdentifier": "6"}]}
    assert stream_failure(lambda_verdict(Invocation(result=ignored), seqs, False), seqs, "r") is None


class FakeKinesis:
    """Shards as lists; iterators are 'shard|index'; selected iterators fail as moto's bad ones do (HTTP 500)."""

    def __init__(self, shards: dict[str, list[str]], parents: dict[str, str] | None = None) -> None:
        self.lock = threading.Lock()
        self.shards = {
            shard: [self._record(i + 1, data) for i, data in enumerate(datas)] for shard, datas in shards.items()
        }
        self.parents = parents or {}
        self.closed: set[str] = set()
        self.iterator_requests: list[dict[str, Any]] = []
        self.get_records_calls: list[tuple[float, int]] = []  # (monotonic time, Limit)
        self.per_call: int | None = None  # at most this many records per GetRecords, as a busy shard may answer
        self.fail_next_get_records = 0

    @staticmethod
    def _record(number: int, data: str) -> dict[str, Any]:
        return {
            "SequenceNumber": str(number),
            "ApproximateArrivalTimestamp": datetime.datetime.now(datetime.UTC),
            "Data": data.encode(),
            "PartitionKey": "pk",
        }

    def add_shard(self, shard: str, datas: list[str]) -> None:
        with self.lock:
            self.shards[shard] = [self._record(i + 1, data) for i, data in enumerate(datas)]

    def describe_stream_summary(self, StreamName: str) -> dict[str, Any]:
        return {
            "StreamDescriptionSummary": {
                "StreamARN": f"arn:aws:kinesis:us-east-1:123456789012:stream/{StreamName}",
                "StreamStatus": "ACTIVE",
                "StreamCreationTimestamp": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
            }
        }

    def list_shards(self, StreamName: str) -> dict[str, Any]:
        with self.lock:
            return {
                "Shards": [
                    {"ShardId": shard, **({"ParentShardId": self.parents[shard]} if shard in self.parents else {})}
                    for shard in self.shards
                ]
            }

    def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        self.iterator_requests.append(kwargs)
        kind, shard = kwargs["ShardIteratorType"], kwargs["ShardId"]
        if kind == "AFTER_SEQUENCE_NUMBER":
            start = int(kwargs["StartingSequenceNumber"])  # sequence number n sits at index n - 1
        elif kind == "AT_TIMESTAMP":
            with self.lock:
                start = sum(r["ApproximateArrivalTimestamp"] < kwargs["Timestamp"] for r in self.shards[shard])
        else:
            assert kind == "TRIM_HORIZON", kind
            start = 0
        return {"ShardIterator": f"{shard}|{start}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        with self.lock:
            if self.fail_next_get_records:
                self.fail_next_get_records -= 1
                raise ClientError({"Error": {"Code": "500", "Message": "Internal Server Error"}}, "GetRecords")
            self.get_records_calls.append((time.monotonic(), Limit))
            shard, index = ShardIterator.split("|")
            records = self.shards[shard][int(index) : int(index) + min(Limit, self.per_call or Limit)]
            end = int(index) + len(records)
            ended = shard in self.closed and end == len(self.shards[shard])
            return {"Records": records, "NextShardIterator": None if ended else f"{shard}|{end}"}


class FakeDynamoDb:
    """A dict as the checkpoint table."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.tables: set[str] = set()

    def describe_table(self, TableName: str) -> dict[str, Any]:
        if TableName not in self.tables:
            raise ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "no"}}, "DescribeTable")
        return {"Table": {"TableStatus": "ACTIVE"}}

    def create_table(self, TableName: str, **_: Any) -> None:
        self.tables.add(TableName)

    def get_item(self, TableName: str, Key: dict[str, Any], ConsistentRead: bool) -> dict[str, Any]:
        item = self.items.get(Key["lease_key"]["S"])
        return {"Item": item} if item else {}

    def put_item(self, TableName: str, Item: dict[str, Any]) -> None:
        self.items[Item["lease_key"]["S"]] = Item

    def checkpoint(self, shard: str) -> str | None:
        for key, item in self.items.items():
            if key.endswith(f":{shard}"):
                return item.get("checkpoint", {}).get("S")
        return None


def shard_poller(
    kinesis: FakeKinesis,
    dynamodb: FakeDynamoDb,
    handler: Any,
    shard: str = "shard-0",
    *,
    batch_size: int = 2,
    window_s: float = 0.0,
    **kwargs: Any,
) -> KinesisShardPoller:
    source = KinesisSource("handle", "s", batch_size, "TRIM_HORIZON", window_s)
    function = LocalFunction("handle", handler, FunctionSpec("unit-dev-handle"))
    stream = StreamInfo("s", STREAM_ARN, "1")
    options = RunnerOptions(kinesis_idle_wait_s=0.01)
    return KinesisShardPoller(
        source, function, stream, shard, kinesis, CheckpointStore(dynamodb, "ckpt"), "us-east-1", options, **kwargs
    )


@pytest.mark.unit
def test_a_bad_iterator_is_acquired_again_from_the_checkpoint() -> None:
    seen: list[str] = []
    kinesis = FakeKinesis({"shard-0": ["a", "b", "c", "d"]})
    dynamodb = FakeDynamoDb()
    poller = shard_poller(kinesis, dynamodb, lambda event, context: seen.extend(r["eventID"] for r in event["Records"]))
    poller.poll_once()
    assert seen == ["shard-0:1", "shard-0:2"] and dynamodb.checkpoint("shard-0") == "2"
    kinesis.fail_next_get_records = 1
    with pytest.raises(ClientError):
        poller.poll_once()
    poller.poll_once()
    assert seen == ["shard-0:1", "shard-0:2", "shard-0:3", "shard-0:4"]
    assert kinesis.iterator_requests[-1]["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER"
    assert kinesis.iterator_requests[-1]["StartingSequenceNumber"] == "2"


@pytest.mark.unit
def test_a_batching_window_gathers_up_to_the_batch_size_at_most_five_reads_a_second() -> None:
    sizes: list[int] = []
    kinesis = FakeKinesis({"shard-0": [f"r{i}" for i in range(7)]})
    kinesis.per_call = 2
    handler = lambda event, context: sizes.append(len(event["Records"]))  # noqa: E731
    poller = shard_poller(kinesis, FakeDynamoDb(), handler, batch_size=5, window_s=5.0)
    poller.poll_once()
    assert sizes == [5]
    assert [limit for _, limit in kinesis.get_records_calls] == [5, 3, 1]
    times = [at for at, _ in kinesis.get_records_calls]
    assert all(later - earlier >= 0.19 for earlier, later in itertools.pairwise(times))

    without_window = FakeKinesis({"shard-0": [f"r{i}" for i in range(7)]})
    without_window.per_call = 2
    sizes.clear()
    shard_poller(without_window, FakeDynamoDb(), handler, batch_size=5).poll_once()
    assert sizes == [2]  # what one read returned: no waiting without a window


@pytest.mark.unit
def test_the_checkpoint_of_an_earlier_stream_with_the_same_name_is_ignored() -> None:
    kinesis = FakeKinesis({"shard-0": ["a"]})
    dynamodb = FakeDynamoDb()
    poller = shard_poller(kinesis, dynamodb, lambda event, context: None)
    dynamodb.items[poller.lease_key] = {
        "lease_key": {"S": poller.lease_key},
        "checkpoint": {"S": "99"},
        "stream_created": {"S": "an earlier stream"},
    }
    poller.poll_once()
    assert kinesis.iterator_requests[0]["ShardIteratorType"] == "TRIM_HORIZON"
    assert dynamodb.checkpoint("shard-0") == "1"


class FakeCloudFormation:
    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        if StackName != "stack":
            raise ClientError({"Error": {"Code": "ValidationError", "Message": "does not exist"}}, "DescribeStacks")
        return {"Stacks": [{"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]}]}


class FakeDestinationSqs:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def get_queue_url(self, QueueName: str) -> dict[str, Any]:
        return {"QueueUrl": f"http://sqs.local/123456789012/{QueueName}"}

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:
        self.sent.append((QueueUrl, json.loads(MessageBody)))


@pytest.mark.unit
def test_the_destination_queue_is_named_by_the_arn_in_a_stack_output() -> None:
    sqs = FakeDestinationSqs()
    outputs = {"FailedArn": "arn:aws:sqs:us-east-1:123456789012:x-failed", "TopicArn": "arn:aws:sns:us-east-1:1:t"}
    FailureDestination("FailedArn", "stack", FakeCloudFormation(outputs), sqs).send({"k": 1})
    assert sqs.sent == [("http://sqs.local/123456789012/x-failed", {"k": 1})]
    for output, stack, problem in [
        ("Missing", "stack", "has no output Missing"),
        ("FailedArn", "other", "stack other"),
        ("TopicArn", "stack", "only SQS"),
    ]:
        with pytest.raises(SourceUnavailable, match=problem):
            FailureDestination(output, stack, FakeCloudFormation(outputs), sqs).send({})


@pytest.mark.unit
def test_discarded_records_are_reported_before_the_checkpoint_moves_past_them() -> None:
    kinesis = FakeKinesis({"shard-0": ["a", "b"]})
    dynamodb = FakeDynamoDb()
    cloudformation = FakeCloudFormation({"FailedArn": "arn:aws:sqs:us-east-1:123456789012:failed"})
    sqs = FakeDestinationSqs()
    destination = FailureDestination("FailedArn", "stack", cloudformation, sqs)

    def handler(event: dict[str, Any], context: Any) -> None:
        raise RuntimeError("always")

    poller = shard_poller(kinesis, dynamodb, handler, destination=destination)
    poller.policy = StreamRetryPolicy(maximum_retry_attempts=0)
    cloudformation.outputs = {}  # the stack output is missing for now
    with pytest.raises(SourceUnavailable):
        poller.poll_once()
    assert dynamodb.checkpoint("shard-0") is None and sqs.sent == []  # not past records nobody was told about
    cloudformation.outputs = {"FailedArn": "arn:aws:sqs:us-east-1:123456789012:failed"}
    poller.poll_once()
    assert dynamodb.checkpoint("shard-0") == "2"
    ((_, message),) = sqs.sent
    assert message["KinesisBatchInfo"]["batchSize"] == 2


@pytest.mark.unit
def test_a_child_shard_waits_until_its_parent_is_read_to_its_end() -> None:
    seen: list[str] = []
    kinesis = FakeKinesis({"parent": ["p1", "p2"], "child": ["c1"]}, parents={"child": "parent"})
    dynamodb = FakeDynamoDb()

    def handler(event: dict[str, Any], context: Any) -> None:
        seen.extend(r["eventID"] for r in event["Records"])

    parent = shard_poller(kinesis, dynamodb, handler, "parent")
    child = shard_poller(kinesis, dynamodb, handler, "child", parents=["parent"])
    child.poll_once()
    parent.poll_once()
    child.poll_once()
    assert seen == ["parent:1", "parent:2"]  # the parent is not closed yet: the child keeps waiting
    kinesis.closed.add("parent")
    parent.poll_once()  # reads the end of the closed shard
    parent.poll_once()  # nothing left: marks the lease finished
    assert parent.finished
    child.poll_once()
    assert seen == ["parent:1", "parent:2", "child:1"]
    assert any(item.get("shard_end", {}).get("BOOL") for item in dynamodb.items.values())


@pytest.mark.unit
def test_latest_skips_what_was_there_but_shards_that_appear_later_are_read_from_their_start() -> None:
    seen: list[str] = []
    lock = threading.Lock()
    app = Chalice(app_name="unit")

    @app.on_kinesis_record(stream="s", batch_size=10, starting_position="LATEST")
    def handle(event: Any) -> None:
        with lock:
            seen.extend(r["eventID"] for r in event.to_dict()["Records"])

    kinesis = FakeKinesis({"shard-0": ["old"]})
    options = RunnerOptions(shard_refresh_s=0.05, kinesis_idle_wait_s=0.02, error_backoff_s=0.05)
    runner = Runner(app, options, region="us-east-1", clients={"kinesis": kinesis, "dynamodb": FakeDynamoDb()})
    (stream_worker,) = runner.workers
    assert isinstance(stream_worker, KinesisStreamWorker)
    runner.start()
    try:
        wait_for(lambda: kinesis.iterator_requests, "the first shard's iterator", timeout_s=10)
        kinesis.add_shard("shard-1", ["x", "y"])
        wait_for(lambda: len(seen) == 2, "the new shard's records", timeout_s=10)
    finally:
        assert runner.stop(grace_s=5)
    assert seen == ["shard-1:1", "shard-1:2"]
    assert [r["ShardIteratorType"] for r in kinesis.iterator_requests] == ["AT_TIMESTAMP", "TRIM_HORIZON"]


# --- Against the emulator ---


@pytest.fixture(scope="module")
def observations_table(aws_endpoint: str) -> str:
    name = f"runner-kobs-{uuid.uuid4().hex[:8]}"
    boto3.client("dynamodb").create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@dataclass(frozen=True)
class Stream:
    name: str
    arn: str
    shards: tuple[str, str]


@pytest.fixture
def stream(aws_endpoint: str) -> Stream:
    kinesis = boto3.client("kinesis")
    name = f"runner-stream-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=name, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    shards = sorted(shard["ShardId"] for shard in kinesis.list_shards(StreamName=name)["Shards"])
    assert len(shards) == 2
    return Stream(name, summary["StreamARN"], (shards[0], shards[1]))


@dataclass(frozen=True)
class Destination:
    stack_name: str
    queue_url: str
    queue_arn: str


@pytest.fixture
def destination(aws_endpoint: str) -> Destination:
    """An on-failure queue made by a CloudFormation stack, its ARN in a stack output, as infra/ does it."""
    suffix = uuid.uuid4().hex[:8]
    template = {
        "Resources": {
            "FailedQueue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": f"runner-failed-{suffix}"}}
        },
        "Outputs": {DESTINATION_OUTPUT: {"Value": {"Fn::GetAtt": ["FailedQueue", "Arn"]}}},
    }
    stack_name = f"runner-dest-{suffix}"
    boto3.client("cloudformation").create_stack(StackName=stack_name, TemplateBody=json.dumps(template))
    sqs = boto3.client("sqs")
    queue_url = wait_for(lambda: _queue_url(sqs, f"runner-failed-{suffix}"), "the stack's queue")
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return Destination(stack_name, queue_url, arn)


def _queue_url(sqs: Any, name: str) -> str | None:
    try:
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except ClientError:
        return None


def put(stream: Stream, shard: int, datas: list[str]) -> list[str]:
    """Put records on one shard (by explicit hash key), in order; their sequence numbers."""
    response = boto3.client("kinesis").put_records(
        StreamName=stream.name,
        Records=[
            {"Data": data.encode(), "PartitionKey": f"pk-{shard}", "ExplicitHashKey": SHARD_HASH_KEYS[shard]}
            for data in datas
        ],
    )
    assert not response.get("FailedRecordCount")
    assert {r["ShardId"] for r in response["Records"]} == {stream.shards[shard]}
    return [r["SequenceNumber"] for r in response["Records"]]


@dataclass(frozen=True)
class Delivery:
    shard: str
    sequence_number: str
    data: str
    pid: int
    request_id: str


def deliveries(table: str, run_id: str) -> list[Delivery]:
    """Every record the handler was given, in delivery order."""
    return [
        Delivery(
            r["eventID"].rsplit(":", 1)[0],
            r["kinesis"]["sequenceNumber"],
            base64.b64decode(r["kinesis"]["data"]).decode(),
            batch["pid"],
            batch["request_id"],
        )
        for batch in observed(table, run_id, "batch")
        for r in batch["records"]
    ]


def on_shard(seen: list[Delivery], shard: str) -> list[str]:
    return [d.sequence_number for d in seen if d.shard == shard]


def destination_messages(queue_url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def checkpoints(table: str) -> dict[str, dict[str, Any]]:
    """The runner's lease table, by shard id; empty until the runner has created it."""
    try:
        items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    except ClientError:
        return {}
    return {item["lease_key"]["S"].rsplit(":", 1)[1]: item for item in items}


def checkpoint_of(table: str, shard: str) -> str | None:
    item = checkpoints(table).get(shard)
    return item["checkpoint"]["S"] if item and "checkpoint" in item else None


@dataclass
class KinesisRun:
    """Settings shared by the runner processes of one test: a restarted runner uses the same ones."""

    tmp_path: Path
    stream: Stream
    table: str
    event_sources: dict[str, Any]
    stack_name: str = "none"
    run_id: str = ""
    checkpoint_table: str = ""

    def __post_init__(self) -> None:
        self.run_id = self.run_id or uuid.uuid4().hex
        self.checkpoint_table = self.checkpoint_table or f"runner-ckpt-{self.run_id[:8]}"

    @contextmanager
    def process(self) -> Iterator[RunningRunner]:
        tag = uuid.uuid4().hex[:8]
        settings_path = self.tmp_path / f"event-sources-{tag}.json"
        settings_path.write_text(json.dumps(self.event_sources))
        log_path = self.tmp_path / f"runner-{tag}.log"
        child_env = {
            **os.environ,
            "RUNNER_KINESIS_STREAM": self.stream.name,
            "RUNNER_FIXTURE_TABLE": self.table,
            "RUNNER_FIXTURE_RUN_ID": self.run_id,
            "PYTHONUNBUFFERED": "1",
        }
        argv = python_module(
            "devstack.runner",
            *("--app", FIXTURE_APP, "--event-sources", str(settings_path)),
            *("--checkpoint-table", self.checkpoint_table, "--stack-name", self.stack_name),
        )
        with log_path.open("wb") as log_file:
            process = ManagedProcess("runner", argv, env=child_env, cwd=str(REPO_ROOT), stdout=log_file).start()
            running = RunningRunner(process, self.run_id, log_path)
            try:
                wait_for(lambda: "runner ready" in running.log() or not process.alive(), "the runner to start", 60)
                assert process.alive(), running.log()
                yield running
            finally:
                process.stop()


def test_every_record_of_both_shards_is_delivered_once_in_order_in_batches_of_at_most_five(
    stream: Stream, observations_table: str, tmp_path: Path
) -> None:
    first = put(stream, 0, [f"ok-{i}" for i in range(12)])
    second = put(stream, 1, [f"ok-{i}" for i in range(7)])
    run = KinesisRun(tmp_path, stream, observations_table, event_sources={})
    with run.process() as runner:
        wait_for(lambda: len(deliveries(observations_table, run.run_id)) >= 19, "the waiting records")
        second += put(stream, 1, ["ok-late-1", "ok-late-2", "ok-late-3"])  # while the runner polls
        wait_for(lambda: len(deliveries(observations_table, run.run_id)) >= 22, "the later records")
        wait_for(lambda: checkpoint_of(run.checkpoint_table, stream.shards[1]) == second[-1], "the last checkpoint")
        assert runner.process.alive()
    seen = deliveries(observations_table, run.run_id)
    assert on_shard(seen, stream.shards[0]) == first
    assert on_shard(seen, stream.shards[1]) == second
    assert checkpoint_of(run.checkpoint_table, stream.shards[0]) == first[-1]
    lease_keys = {item["lease_key"]["S"] for item in checkpoints(run.checkpoint_table).values()}
    assert lease_keys == {f"{FUNCTION_NAME}:{stream.arn}:{shard}" for shard in stream.shards}

    batches = observed(observations_table, run.run_id, "batch")
    sizes = [len(batch["records"]) for batch in batches]
    assert max(sizes) == 5, sizes  # 12 waiting records on one shard: the batch size, never more
    assert all(len({r["eventID"].rsplit(":", 1)[0] for r in batch["records"]}) == 1 for batch in batches)
    assert {batch["function_name"] for batch in batches} == {FUNCTION_NAME}
    for record in (r for batch in batches for r in batch["records"]):
        assert record["eventSource"] == "aws:kinesis"
        assert record["eventSourceARN"] == stream.arn
        assert record["eventName"] == "aws:kinesis:record"
        assert record["eventVersion"] == "1.0"
        assert record["invokeIdentityArn"] == ROLE_ARN
        assert record["awsRegion"] == "us-east-1"
        assert record["eventID"] == f"{record['eventID'].rsplit(':', 1)[0]}:{record['kinesis']['sequenceNumber']}"
        assert record["kinesis"]["kinesisSchemaVersion"] == "1.0"
        assert record["kinesis"]["partitionKey"] in {"pk-0", "pk-1"}
        assert abs(record["kinesis"]["approximateArrivalTimestamp"] - time.time()) < 3600
    assert "invoked ingest shard=" in runner.log()


def test_a_raising_record_is_isolated_by_bisecting_reported_to_the_destination_and_its_shard_moves_on(
    stream: Stream, destination: Destination, observations_table: str, tmp_path: Path
) -> None:
    settings = {
        "function_response_types": ["ReportBatchItemFailures"],
        "bisect_batch_on_function_error": True,
        "maximum_retry_attempts": 2,
        "on_failure_destination_output": DESTINATION_OUTPUT,
    }
    ok_0, ok_1, bad, *after = put(stream, 0, ["ok", "ok", "raise", "ok", "ok", "ok", "ok"])
    other = put(stream, 1, ["ok", "ok", "ok"])
    run = KinesisRun(tmp_path, stream, observations_table, {"ingest": settings}, destination.stack_name)
    with run.process() as runner:
        (message,) = wait_for(lambda: destination_messages(destination.queue_url), "the destination record")
        wait_for(lambda: checkpoint_of(run.checkpoint_table, stream.shards[0]) == after[-1], "the shard to move on")
        wait_for(lambda: checkpoint_of(run.checkpoint_table, stream.shards[1]) == other[-1], "the other shard")

    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["functionArn"] == f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}"
    # All 5, then 3 of them (the half holding it), then alone: bisecting spent no retries; then 2 retries.
    assert message["requestContext"]["approximateInvokeCount"] == 5
    assert message["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert message["version"] == "1.0" and message["timestamp"].endswith("Z")
    info = message["KinesisBatchInfo"]
    assert {k: info[k] for k in ("shardId", "startSequenceNumber", "endSequenceNumber", "batchSize", "streamArn")} == {
        "shardId": stream.shards[0],
        "startSequenceNumber": bad,
        "endSequenceNumber": bad,
        "batchSize": 1,
        "streamArn": stream.arn,
    }
    assert info["approximateArrivalOfFirstRecord"] == info["approximateArrivalOfLastRecord"]
    assert destination_messages(destination.queue_url) == []  # exactly one

    seen = on_shard(deliveries(observations_table, run.run_id), stream.shards[0])
    assert seen.count(bad) == 5
    assert seen.count(ok_0) == seen.count(ok_1) == 2  # the first batch, then the first half
    assert [seen.count(seq) for seq in after] == [3, 3, 1, 1]  # two in batches with it, two in the next batch
    assert on_shard(deliveries(observations_table, run.run_id), stream.shards[1]) == other
    done = {event_id for d in observed(observations_table, run.run_id, "done") for event_id in d["event_ids"]}
    assert {f"{stream.shards[0]}:{seq}" for seq in [ok_0, ok_1, *after]} <= done
    assert "RuntimeError: fixture: raise requested" in runner.log()


def test_a_reported_poison_record_uses_up_its_retries_and_goes_to_the_destination(
    stream: Stream, destination: Destination, observations_table: str, tmp_path: Path
) -> None:
    settings = {  # as infra/event_sources.json configures apply_executions
        "function_response_types": ["ReportBatchItemFailures"],
        "bisect_batch_on_function_error": True,
        "maximum_retry_attempts": 2,
        "maximum_record_age_in_seconds": 3600,
        "on_failure_destination_output": DESTINATION_OUTPUT,
    }
    *before, poison, later_1, later_2 = put(stream, 0, ["ok", "ok", "ok", "ok", "poison", "ok", "ok"])
    run = KinesisRun(tmp_path, stream, observations_table, {"ingest": settings}, destination.stack_name)
    with run.process():
        (message,) = wait_for(lambda: destination_messages(destination.queue_url), "the destination record")
        wait_for(lambda: checkpoint_of(run.checkpoint_table, stream.shards[0]) == later_2, "the shard to move on")
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 3
    assert message["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}  # it did not error
    info = message["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (poison, poison, 1)
    seen = on_shard(deliveries(observations_table, run.run_id), stream.shards[0])
    assert seen == [*before, poison, poison, poison, later_1, later_2]  # records before it: delivered once


def test_a_partial_batch_response_delivers_again_from_the_reported_record_only(
    stream: Stream, observations_table: str, tmp_path: Path
) -> None:
    settings = {"function_response_types": ["ReportBatchItemFailures"]}
    a, b, flaky, c, d = put(stream, 0, ["ok", "ok", "flaky", "ok", "ok"])
    run = KinesisRun(tmp_path, stream, observations_table, {"ingest": settings})
    with run.process():
        wait_for(lambda: checkpoint_of(run.checkpoint_table, stream.shards[0]) == d, "the checkpoint past the batch")
    batches = [
        [r["kinesis"]["sequenceNumber"] for r in batch["records"]]
        for batch in observed(observations_table, run.run_id, "batch")
    ]
    assert batches == [[a, b, flaky, c, d], [flaky, c, d]]


def test_without_report_batch_item_failures_a_returned_report_is_ignored(
    stream: Stream, observations_table: str, tmp_path: Path
) -> None:
    a, poison, b = put(stream, 0, ["ok", "poison", "ok"])
    run = KinesisRun(tmp_path, stream, observations_table, event_sources={})  # Lambda's defaults
    with run.process() as runner:
        wait_for(lambda: checkpoint_of(run.checkpoint_table, stream.shards[0]) == b, "the checkpoint past the batch")
        time.sleep(1.5)  # a chance for a wrong retry to show (a lower bound only)
    assert on_shard(deliveries(observations_table, run.run_id), stream.shards[0]) == [a, poison, b]
    assert "lacks ReportBatchItemFailures" in runner.log()


SLOW = "sleep:0.2"  # 1 s per batch of 5: long enough to stop the runner mid-stream


def test_a_runner_stopped_with_sigterm_resumes_from_its_checkpoint_without_redelivering(
    stream: Stream, observations_table: str, tmp_path: Path
) -> None:
    put_on = {shard: put(stream, index, [SLOW] * 20) for index, shard in enumerate(stream.shards)}
    run = KinesisRun(tmp_path, stream, observations_table, event_sources={})
    with run.process() as first:
        wait_for(lambda: _done_on_both_shards(observations_table, run.run_id, stream), "a batch done on each shard")
        first.process.signal(signal.SIGTERM)
        assert first.process.process is not None
        assert first.process.process.wait(timeout=DEADLINE_S) == 0, first.log()
    before_restart = deliveries(observations_table, run.run_id)
    assert len(before_restart) < 40, "the runner was not stopped mid-stream"
    for shard in stream.shards:  # the in-flight batch was finished and its checkpoint saved
        assert checkpoint_of(run.checkpoint_table, shard) == on_shard(before_restart, shard)[-1]

    with run.process():
        wait_for(lambda: len(deliveries(observations_table, run.run_id)) >= 40, "every record")
        for shard in stream.shards:
            wait_for(lambda shard=shard: checkpoint_of(run.checkpoint_table, shard) == put_on[shard][-1], "the end")
    seen = deliveries(observations_table, run.run_id)
    for shard in stream.shards:
        assert on_shard(seen, shard) == put_on[shard]  # nothing skipped, nothing twice, in order
    assert len({d.pid for d in seen}) == 2


def test_a_killed_runner_resumes_from_its_checkpoint_skipping_nothing(
    stream: Stream, observations_table: str, tmp_path: Path
) -> None:
    put_on = {shard: put(stream, index, [SLOW] * 20) for index, shard in enumerate(stream.shards)}
    run = KinesisRun(tmp_path, stream, observations_table, event_sources={})
    with run.process() as first:
        wait_for(
            lambda: all(checkpoint_of(run.checkpoint_table, shard) for shard in stream.shards), "checkpoints saved"
        )
        first.process.kill()  # SIGKILL: no chance to finish or save anything
    before_restart = deliveries(observations_table, run.run_id)
    assert len(before_restart) < 40, "the runner was not killed mid-stream"
    saved = {shard: checkpoint_of(run.checkpoint_table, shard) for shard in stream.shards}

    with run.process():
        for shard in stream.shards:
            wait_for(lambda shard=shard: checkpoint_of(run.checkpoint_table, shard) == put_on[shard][-1], "the end")
    seen = deliveries(observations_table, run.run_id)
    first_pid = before_restart[0].pid
    for shard in stream.shards:
        delivered = on_shard(seen, shard)
        assert sorted(set(delivered), key=int) == put_on[shard]  # nothing skipped
        after_restart = [d.sequence_number for d in seen if d.shard == shard and d.pid != first_pid]
        checkpoint = saved[shard]
        assert checkpoint is not None
        # Resumed right after the saved checkpoint, not from the start of the shard.
        assert after_restart[:1] == put_on[shard][put_on[shard].index(checkpoint) + 1 :][:1]
        # At most the batch in flight at the kill is delivered twice.
        twice = {seq for seq in delivered if delivered.count(seq) > 1}
        assert twice <= set(_last_batch(before_restart, shard)), (twice, delivered)


def _done_on_both_shards(table: str, run_id: str, stream: Stream) -> bool:
    done_shards = {event_id.rsplit(":", 1)[0] for d in observed(table, run_id, "done") for event_id in d["event_ids"]}
    return done_shards >= set(stream.shards)


def _last_batch(seen: list[Delivery], shard: str) -> list[str]:
    on_this_shard = [d for d in seen if d.shard == shard]
    if not on_this_shard:
        return []
    last_request = on_this_shard[-1].request_id
    return [d.sequence_number for d in on_this_shard if d.request_id == last_request]
