"""The runner's Kinesis event source mapping as a real process on the emulator: order, retries, checkpoints."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from devstack.processes import ManagedProcess, python_module
from tests.tooling.runner_support import DEADLINE_S, REPO_ROOT, ROLE_ARN, RunningRunner, observed, wait_for

pytestmark = pytest.mark.integration

FIXTURE_APP = "tests.tooling.runner_kinesis_fixture_app:app"
FUNCTION_NAME = "runner-kinesis-fixture-dev-ingest"
DESTINATION_OUTPUT = "FixtureFailedQueueArn"
# ExplicitHashKey values inside each half of the hash key space: shard 0 and shard 1 of a 2-shard stream.
SHARD_HASH_KEYS = ("0", str(2**127))


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
