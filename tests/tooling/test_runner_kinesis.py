"""The runner's Kinesis event source mapping in process: event shape, retry rules, shard pollers over fakes."""

from __future__ import annotations

import base64
import datetime
import itertools
import json
import threading
import time
from dataclasses import replace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from chalice.app import Chalice

from devstack.lambda_context import FunctionSpec
from devstack.runner.app_runner import Runner
from devstack.runner.checkpoints import CheckpointStore
from devstack.runner.destination import FailureDestination
from devstack.runner.events import kinesis_event, kinesis_failure_record
from devstack.runner.invocation import Invocation, LocalFunction
from devstack.runner.kinesis import KinesisShardPoller, KinesisSource, KinesisStreamWorker, StreamInfo
from devstack.runner.options import RunnerOptions
from devstack.runner.retries import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    Discard,
    Segment,
    StreamFailure,
    StreamRetryPolicy,
    expire_records,
    plan_stream_retry,
    retry_backoff_s,
    stream_failure,
)
from devstack.runner.verdicts import BatchVerdict, lambda_verdict
from devstack.runner.worker import SourceUnavailable
from tests.tooling.runner_support import ROLE_ARN, wait_for

pytestmark = pytest.mark.integration

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
