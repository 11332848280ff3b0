"""The local runner: event shapes and Lambda's batch semantics, then the real process against the emulator."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from aws_lambda_powertools import Logger
from botocore.exceptions import EndpointConnectionError
from chalice.app import Chalice, Cron, Rate

from devstack.lambda_context import FunctionSpec
from devstack.processes import ManagedProcess, python_module
from devstack.runner import (
    DEFAULT_EVENT_SOURCES_PATH,
    BatchVerdict,
    EventSourcesError,
    Invocation,
    MappingSettings,
    Runner,
    RunnerOptions,
    batch_verdict,
    lambda_verdict,
    load_event_sources,
    messages_to_delete,
    parse_args,
    schedule_period_s,
    scheduled_event,
    sqs_event,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_APP = "tests.integration.runner_fixture_app:app"
REPORT_FAILURES = {"function_response_types": ["ReportBatchItemFailures"]}
DEADLINE_S = 30.0
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], what: str, timeout_s: float = DEADLINE_S) -> T:
    """Poll until probe returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def message(message_id: str, body: str = "ok", **extra: Any) -> dict[str, Any]:
    """A ReceiveMessage result message, as boto3 returns it."""
    return {
        "MessageId": message_id,
        "ReceiptHandle": f"rh-{message_id}",
        "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
        **extra,
    }


# --- Unit level: no emulator ---


@pytest.mark.unit
def test_sqs_event_has_the_lambda_shape() -> None:
    received = message(
        "m-1",
        "hello",
        MD5OfMessageAttributes="abc",
        MessageAttributes={
            "kind": {"StringValue": "order", "DataType": "String"},
            "blob": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
        },
    )
    event = sqs_event([received], "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")
    assert event == {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "rh-m-1",
                "body": "hello",
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
                "messageAttributes": {
                    "kind": {
                        "stringValue": "order",
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": "String",
                    },
                    "blob": {
                        "binaryValue": "AAE=",
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": "Binary",
                    },
                },
                "md5OfMessageAttributes": "abc",
                "md5OfBody": hashlib.md5(b"hello").hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "awsRegion": "us-east-1",
            }
        ]
    }


@pytest.mark.unit
@pytest.mark.parametrize(
    ("result", "failed", "whole"),
    [
        (None, set(), False),
        ({}, set(), False),
        ({"statusCode": 200}, set(), False),
        ("done", set(), False),
        ({"batchItemFailures": None}, set(), False),
        ({"batchItemFailures": []}, set(), False),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, {"b"}, False),
        ({"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "c"}]}, {"a", "c"}, False),
        # AWS: any malformed entry fails the whole batch.
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, {"a", "b", "c"}, True),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, {"a", "b", "c"}, True),
        ({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, {"a", "b", "c"}, True),
        ({"batchItemFailures": [{"itemIdentifier": "b"}, {"item": "a"}]}, {"a", "b", "c"}, True),
        ({"batchItemFailures": ["b"]}, {"a", "b", "c"}, True),
        ({"batchItemFailures": "b"}, {"a", "b", "c"}, True),
        ({"batchItemFailures": [], "when": object()}, {"a", "b", "c"}, True),  # not serializable
    ],
)
def test_batch_verdict_follows_report_batch_item_failures(result: Any, failed: set[str], whole: bool) -> None:
    verdict = batch_verdict(result, ["a", "b", "c"])
    assert verdict.failed_ids == failed
    assert verdict.whole_batch is whole


@pytest.mark.unit
def test_messages_to_delete_are_all_but_the_failed_ones() -> None:
    batch = [message("a"), message("b"), message("c")]
    assert [m["ReceiptHandle"] for m in messages_to_delete(batch, batch_verdict(None, ["a", "b", "c"]))] == [
        "rh-a",
        "rh-b",
        "rh-c",
    ]
    partial = batch_verdict({"batchItemFailures": [{"itemIdentifier": "b"}]}, ["a", "b", "c"])
    assert [m["ReceiptHandle"] for m in messages_to_delete(batch, partial)] == ["rh-a", "rh-c"]
    unknown = batch_verdict({"batchItemFailures": [{"itemIdentifier": "x"}]}, ["a", "b", "c"])
    assert messages_to_delete(batch, unknown) == []
    assert messages_to_delete(batch, BatchVerdict(frozenset({"a", "b", "c"}), True, "raised")) == []


@pytest.mark.unit
def test_schedule_periods_come_from_the_expression() -> None:
    assert schedule_period_s(Rate(1, unit=Rate.MINUTES)) == 60
    assert schedule_period_s(Rate(2, unit=Rate.HOURS)) == 7200
    assert schedule_period_s(Rate(1, unit=Rate.DAYS)) == 86_400
    assert schedule_period_s("rate(5 minutes)") == 300
    assert schedule_period_s(Cron(0, 10, "*", "*", "?", "*")) == 60
    assert schedule_period_s("cron(0 10 * * ? *)") == 60


@pytest.mark.unit
def test_schedule_interval_comes_from_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNNER_SCHEDULE_INTERVAL_S", raising=False)
    assert parse_args([]).schedule_interval is None
    monkeypatch.setenv("RUNNER_SCHEDULE_INTERVAL_S", "2.5")
    assert parse_args([]).schedule_interval == 2.5
    assert parse_args(["--schedule-interval", "7"]).schedule_interval == 7


@pytest.mark.unit
def test_scheduled_event_has_the_eventbridge_shape() -> None:
    event = scheduled_event("arn:aws:events:us-east-1:123456789012:rule/r", "us-east-1")
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/r"]
    assert event["detail"] == {}
    assert event["time"].endswith("Z")
    assert event["id"] != scheduled_event("arn:x", "us-east-1")["id"]


@pytest.mark.unit
def test_lambda_context_counts_down_and_satisfies_powertools() -> None:
    spec = FunctionSpec(function_name="app-dev-fn", timeout_s=3)
    first, second = spec.new_context(), spec.new_context()
    assert first.aws_request_id != second.aws_request_id
    assert first.invoked_function_arn == "arn:aws:lambda:us-east-1:123456789012:function:app-dev-fn"
    assert first.log_group_name == "/aws/lambda/app-dev-fn"
    assert first.memory_limit_in_mb == "128"  # a string, as in the real runtime
    remaining = first.get_remaining_time_in_millis()
    assert 0 < remaining <= 3000
    time.sleep(0.05)
    assert first.get_remaining_time_in_millis() < remaining

    logger = Logger(service="runner-test")
    seen: dict[str, Any] = {}

    @logger.inject_lambda_context
    def handler(event: dict[str, Any], context: Any) -> str:
        seen.update(logger.get_current_keys())
        return "handled"

    assert handler({}, first) == "handled"
    assert seen["function_request_id"] == first.aws_request_id
    assert seen["function_name"] == "app-dev-fn"


class FakeSqs:
    """Just enough of an SQS client: a list of messages, some failing calls, a record of every request."""

    def __init__(self, messages: list[dict[str, Any]], per_receive: int = 10, failing_receives: int = 0) -> None:
        self.messages = messages
        self.per_receive = per_receive
        self.failing_receives = failing_receives
        self.receive_calls: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    def get_queue_url(self, QueueName: str) -> dict[str, Any]:
        return {"QueueUrl": f"http://sqs.local/123456789012/{QueueName}"}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:" + QueueUrl.rsplit("/", 1)[-1]}}

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.receive_calls.append(kwargs)
        if self.failing_receives:
            self.failing_receives -= 1
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        count = min(kwargs["MaxNumberOfMessages"], self.per_receive)
        taken, self.messages = self.messages[:count], self.messages[count:]
        return {"Messages": taken} if taken else {}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        self.deleted += [entry["ReceiptHandle"] for entry in Entries]
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries], "Failed": []}


def recording_app(batch_size: int, window_s: int, outcome: Callable[[list[dict[str, Any]]], Any]) -> Chalice:
    app = Chalice(app_name="unit")

    @app.on_sqs_message(queue="q", batch_size=batch_size, maximum_batching_window_in_seconds=window_s)
    def handle(event: Any) -> Any:
        return outcome(event.to_dict()["Records"])

    return app


@pytest.mark.unit
def test_one_receive_per_batch_without_a_window() -> None:
    sizes: list[int] = []
    app = recording_app(5, 0, lambda records: sizes.append(len(records)))
    fake = FakeSqs([message(f"m{i}") for i in range(6)], per_receive=2)
    runner = Runner(app, RunnerOptions(poll_wait_s=0), sqs_client=fake, region="us-east-1")
    report = runner.run_once_sqs("handle")
    assert report is not None
    assert sizes == [2]
    assert fake.receive_calls[0]["MaxNumberOfMessages"] == 5
    assert fake.receive_calls[0]["MessageAttributeNames"] == ["All"]
    assert fake.receive_calls[0]["MessageSystemAttributeNames"] == ["All"]
    assert fake.deleted == ["rh-m0", "rh-m1"]


@pytest.mark.unit
def test_a_batching_window_gathers_up_to_the_batch_size() -> None:
    sizes: list[int] = []
    app = recording_app(5, 2, lambda records: sizes.append(len(records)))
    fake = FakeSqs([message(f"m{i}") for i in range(6)], per_receive=2)
    runner = Runner(app, RunnerOptions(poll_wait_s=0), sqs_client=fake, region="us-east-1")
    runner.run_once_sqs("handle")
    assert sizes == [5]
    assert [call["MaxNumberOfMessages"] for call in fake.receive_calls] == [5, 3, 1]


@pytest.mark.unit
def test_a_handler_that_raises_deletes_nothing_and_partial_failures_delete_the_rest() -> None:
    def outcome(records: list[dict[str, Any]]) -> Any:
        if any(r["body"] == "raise" for r in records):
            raise RuntimeError("boom")
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records if r["body"] == "fail"]}

    app = recording_app(3, 0, outcome)
    fake = FakeSqs([message("a", "ok"), message("b", "raise"), message("c", "ok"), message("d", "fail")], 2)
    runner = Runner(
        app,
        RunnerOptions(poll_wait_s=0),
        sqs_client=fake,
        region="us-east-1",
        event_sources={"handle": MappingSettings.from_json("handle", REPORT_FAILURES)},
    )
    raised = runner.run_once_sqs("handle")
    assert raised is not None and raised.invocation.failed and raised.deleted_ids == []
    partial = runner.run_once_sqs("handle")
    assert partial is not None and partial.deleted_ids == ["c"]
    assert fake.deleted == ["rh-c"]


@pytest.mark.unit
def test_without_report_batch_item_failures_a_returned_report_is_ignored_as_on_aws() -> None:
    def outcome(records: list[dict[str, Any]]) -> Any:
        if any(r["body"] == "raise" for r in records):
            raise RuntimeError("boom")
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records if r["body"] == "fail"]}

    app = recording_app(2, 0, outcome)
    fake = FakeSqs([message("a", "ok"), message("b", "fail"), message("c", "raise"), message("d", "ok")], 2)
    runner = Runner(app, RunnerOptions(poll_wait_s=0), sqs_client=fake, region="us-east-1")  # no settings
    reported = runner.run_once_sqs("handle")
    assert reported is not None and reported.deleted_ids == ["a", "b"]  # the invocation succeeded: all deleted
    raised = runner.run_once_sqs("handle")
    assert raised is not None and raised.deleted_ids == []  # it failed: nothing deleted, as before
    assert fake.deleted == ["rh-a", "rh-b"]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("result", "error", "report", "failed", "whole"),
    [
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, None, True, {"b"}, False),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, None, False, set(), False),
        ({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, None, False, set(), False),  # not even read
        ({"when": object()}, None, False, {"a", "b"}, True),  # the runtime cannot send it back either way
        (None, RuntimeError("boom"), False, {"a", "b"}, True),
        (None, RuntimeError("boom"), True, {"a", "b"}, True),
    ],
)
def test_lambda_verdict_reads_a_report_only_with_report_batch_item_failures(
    result: Any, error: BaseException | None, report: bool, failed: set[str], whole: bool
) -> None:
    verdict = lambda_verdict(Invocation(result=result, error=error), ["a", "b"], report)
    assert verdict.failed_ids == failed
    assert verdict.whole_batch is whole
    assert verdict.function_error is (error is not None or "when" in (result or {}))


@pytest.mark.unit
def test_event_source_settings_load_with_lambdas_defaults_and_limits(tmp_path: Path) -> None:
    settings = load_event_sources(DEFAULT_EVENT_SOURCES_PATH)  # the project's own file is valid
    assert settings["place_orders"].report_batch_item_failures
    assert not settings["place_orders"].stream_only_settings
    executions = settings["apply_executions"].retry_policy()
    assert executions.bisect_on_function_error and executions.maximum_retry_attempts == 3
    assert MappingSettings() == MappingSettings.from_json("x", {})
    default_policy = MappingSettings().retry_policy()
    assert default_policy.maximum_retry_attempts is None and default_policy.maximum_record_age_s is None

    for bad in (
        {"function_response_types": ["ReportBatchItemFailure"]},
        {"maximum_retry_attempts": 10_001},
        {"maximum_retry_attempts": True},
        {"maximum_record_age_in_seconds": 30},  # Lambda's minimum is 60
        {"bisect_batch_on_function_error": "yes"},
        {"on_failure_destination_output": ""},
        {"maximum_retry_attempt": 2},  # a typo must not silently mean the default
    ):
        with pytest.raises(EventSourcesError):
            MappingSettings.from_json("x", bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(EventSourcesError):
        load_event_sources(broken)


@pytest.mark.unit
def test_stream_only_settings_on_an_sqs_handler_are_refused_as_lambda_would() -> None:
    app = recording_app(5, 0, lambda records: None)
    settings = {"handle": MappingSettings.from_json("handle", {"bisect_batch_on_function_error": True})}
    runner = Runner(app, sqs_client=FakeSqs([]), region="us-east-1", event_sources=settings)
    with pytest.raises(EventSourcesError, match="bisect_batch_on_function_error"):
        _ = runner.workers


@pytest.mark.unit
def test_the_settings_file_and_checkpoint_table_can_be_chosen_on_the_command_line(tmp_path: Path) -> None:
    defaults = parse_args([])
    assert defaults.event_sources == DEFAULT_EVENT_SOURCES_PATH
    assert defaults.checkpoint_table == "runner-checkpoints"
    chosen = parse_args(["--event-sources", str(tmp_path / "e.json"), "--checkpoint-table", "t", "--stack-name", "s"])
    assert (chosen.event_sources, chosen.checkpoint_table, chosen.stack_name) == (tmp_path / "e.json", "t", "s")


@pytest.mark.unit
def test_a_handler_past_the_function_timeout_counts_as_failed() -> None:
    app = recording_app(5, 0, lambda records: time.sleep(0.05))
    fake = FakeSqs([message("slow")])
    runner = Runner(app, RunnerOptions(poll_wait_s=0, function_timeout_s=0.01), sqs_client=fake, region="us-east-1")
    report = runner.run_once_sqs("handle")
    assert report is not None and report.invocation.failed and report.verdict.whole_batch
    assert fake.deleted == []


@pytest.mark.unit
def test_a_poller_survives_an_unreachable_endpoint() -> None:
    handled: list[str] = []
    app = recording_app(5, 0, lambda records: handled.extend(r["messageId"] for r in records))
    fake = FakeSqs([message("m1")], failing_receives=3)
    runner = Runner(app, RunnerOptions(poll_wait_s=0, error_backoff_s=0.05), sqs_client=fake, region="us-east-1")
    runner.start()
    try:
        wait_for(lambda: handled, "the message after the endpoint came back", timeout_s=10)
    finally:
        assert runner.stop(grace_s=5)
    assert handled == ["m1"]
    assert fake.deleted == ["rh-m1"]


# --- Against the emulator ---


@dataclass(frozen=True)
class Queues:
    name: str
    url: str
    arn: str
    dlq_url: str


@pytest.fixture
def sqs(aws_endpoint: str) -> Any:
    return boto3.client("sqs")


@pytest.fixture(scope="module")
def observations_table(aws_endpoint: str) -> str:
    name = f"runner-obs-{uuid.uuid4().hex[:8]}"
    boto3.client("dynamodb").create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def make_queues(sqs: Any, visibility_timeout_s: int = 30) -> Queues:
    suffix = uuid.uuid4().hex[:8]
    dlq_url = sqs.create_queue(QueueName=f"runner-dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    name = f"runner-q-{suffix}"
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout_s),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return Queues(name, url, arn, dlq_url)


def send(sqs: Any, queue_url: str, bodies: list[str]) -> list[str]:
    """Send in batches of 10; the message ids, in order."""
    ids: list[str] = []
    for offset in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[offset : offset + 10])]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not response.get("Failed")
        ids += [ok["MessageId"] for ok in sorted(response["Successful"], key=lambda ok: int(ok["Id"]))]
    return ids


def queue_depth(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def observed(table: str, run_id: str, kind: str) -> list[dict[str, Any]]:
    """What the fixture app recorded, oldest first."""
    client = boto3.client("dynamodb")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "run_id = :r AND kind = :k",
        "ExpressionAttributeValues": {":r": {"S": run_id}, ":k": {"S": kind}},
    }
    while True:
        page = client.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    items.sort(key=lambda item: float(item["at"]["N"]))
    return [json.loads(item["data"]["S"]) for item in items]


def deliveries(table: str, run_id: str) -> list[tuple[str, str, str]]:
    """(messageId, body, ApproximateReceiveCount) of every record the handler was given."""
    return [
        (r["messageId"], r["body"], r["attributes"]["ApproximateReceiveCount"])
        for batch in observed(table, run_id, "batch")
        for r in batch["records"]
    ]


@dataclass
class RunningRunner:
    process: ManagedProcess
    run_id: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def runner_process(
    tmp_path: Path,
    queue_name: str,
    table: str,
    *args: str,
    env: dict[str, str] | None = None,
    event_sources: dict[str, Any] | None = None,
) -> Iterator[RunningRunner]:
    run_id = uuid.uuid4().hex
    log_path = tmp_path / f"runner-{run_id[:8]}.log"
    # The fixture app's mapping reports failures unless a test says otherwise, as place_orders' does.
    settings_path = tmp_path / f"event-sources-{run_id[:8]}.json"
    settings_path.write_text(json.dumps({"consume": REPORT_FAILURES} if event_sources is None else event_sources))
    args = ("--event-sources", str(settings_path), *args)
    child_env = {
        **os.environ,
        "RUNNER_FIXTURE_QUEUE": queue_name,
        "RUNNER_FIXTURE_TABLE": table,
        "RUNNER_FIXTURE_RUN_ID": run_id,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with log_path.open("wb") as log_file:
        process = ManagedProcess(
            "runner",
            python_module("devstack.runner", "--app", FIXTURE_APP, *args),
            env=child_env,
            cwd=str(REPO_ROOT),
            stdout=log_file,
        ).start()
        running = RunningRunner(process, run_id, log_path)
        try:
            wait_for(
                lambda: "runner ready" in running.log() or not process.alive(), "the runner to start", timeout_s=60
            )
            assert process.alive(), running.log()
            yield running
        finally:
            process.stop()


def test_successful_messages_are_delivered_once_in_batches_of_at_most_five_then_deleted(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    queues = make_queues(sqs)
    ids = send(sqs, queues.url, ["ok"] * 12)
    sqs.send_message(
        QueueUrl=queues.url,
        MessageBody="ok",
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "order"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    with runner_process(tmp_path, queues.name, observations_table) as runner:
        wait_for(lambda: len(deliveries(observations_table, runner.run_id)) >= 13, "13 deliveries")
        wait_for(lambda: queue_depth(sqs, queues.url) == 0, "an empty queue")
        assert runner.process.alive()
    seen = deliveries(observations_table, runner.run_id)
    seen_ids = [message_id for message_id, _, _ in seen]
    assert len(seen_ids) == len(set(seen_ids)) == 13, seen
    assert set(ids) <= set(seen_ids)
    assert {count for _, _, count in seen} == {"1"}

    batches = observed(observations_table, runner.run_id, "batch")
    sizes = [len(batch["records"]) for batch in batches]
    assert max(sizes) == 5, sizes  # 13 waiting messages: the batch size, never more
    assert len({batch["request_id"] for batch in batches}) == len(batches)
    assert all(batch["function_name"] == "runner-fixture-dev-consume" for batch in batches)
    assert all(0 < batch["remaining_ms"] <= 60_000 for batch in batches)

    records = [r for batch in batches for r in batch["records"]]
    for record in records:
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"] == queues.arn
        assert record["awsRegion"] == "us-east-1"
        assert record["md5OfBody"] == hashlib.md5(b"ok").hexdigest()
        assert {"ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(
            record["attributes"]
        )
        assert all(isinstance(value, str) for value in record["attributes"].values())
    with_attributes = [r for r in records if r["messageAttributes"]]
    assert len(with_attributes) == 1
    assert with_attributes[0]["messageAttributes"] == {
        "kind": {"stringValue": "order", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
        "blob": {"binaryValue": "AAE=", "stringListValues": [], "binaryListValues": [], "dataType": "Binary"},
    }
    assert "invoked consume records=" in runner.log()


def test_a_reported_failure_is_retried_then_dead_lettered_while_its_batch_mates_are_deleted(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    queues = make_queues(sqs)
    ok_1, failing, ok_2, ok_3 = send(sqs, queues.url, ["ok", "fail", "ok", "ok"])
    with runner_process(tmp_path, queues.name, observations_table) as runner:
        wait_for(lambda: queue_depth(sqs, queues.dlq_url) == 1, "the failing message in the DLQ")
        wait_for(lambda: queue_depth(sqs, queues.url) == 0, "an empty queue")
    seen = deliveries(observations_table, runner.run_id)
    assert [count for message_id, _, count in seen if message_id == failing] == ["1", "2"]
    for ok in (ok_1, ok_2, ok_3):
        assert [count for message_id, _, count in seen if message_id == ok] == ["1"], seen

    first_batch = {r["messageId"] for r in observed(observations_table, runner.run_id, "batch")[0]["records"]}
    assert failing in first_batch and len(first_batch) > 1, "no partial batch was exercised"

    dead = sqs.receive_message(QueueUrl=queues.dlq_url, WaitTimeSeconds=1)["Messages"]
    assert [(m["MessageId"], m["Body"]) for m in dead] == [(failing, "fail")]


def test_without_report_batch_item_failures_a_reported_failure_is_deleted_with_its_batch(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    queues = make_queues(sqs)
    ok_1, failing, ok_2 = send(sqs, queues.url, ["ok", "fail", "ok"])
    with runner_process(tmp_path, queues.name, observations_table, event_sources={}) as runner:
        wait_for(lambda: len(deliveries(observations_table, runner.run_id)) >= 3, "three deliveries")
        wait_for(lambda: queue_depth(sqs, queues.url) == 0, "an empty queue")
        time.sleep(1.5)  # a chance for a wrong redelivery to show (a lower bound only)
    seen = deliveries(observations_table, runner.run_id)
    assert sorted(message_id for message_id, _, _ in seen) == sorted([ok_1, failing, ok_2]), seen
    assert queue_depth(sqs, queues.dlq_url) == 0
    assert "lacks ReportBatchItemFailures" in runner.log()


def test_a_raising_handler_keeps_the_whole_batch_and_the_runner_keeps_going(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    # A short visibility timeout: after a raise, nothing shortens it for us.
    queues = make_queues(sqs, visibility_timeout_s=1)
    (raising,) = send(sqs, queues.url, ["raise"])
    with runner_process(tmp_path, queues.name, observations_table) as runner:
        wait_for(lambda: queue_depth(sqs, queues.dlq_url) == 1, "the raising message in the DLQ")
        (later,) = send(sqs, queues.url, ["ok"])
        wait_for(lambda: any(m == later for m, _, _ in deliveries(observations_table, runner.run_id)), "a later ok")
        wait_for(lambda: queue_depth(sqs, queues.url) == 0, "an empty queue")
        assert runner.process.alive()
    seen = deliveries(observations_table, runner.run_id)
    assert [count for message_id, _, count in seen if message_id == raising] == ["1", "2"]
    assert len(observed(observations_table, runner.run_id, "done")) == 1  # only the later ok batch finished
    assert "RuntimeError: fixture: raise requested" in runner.log()
    assert "Traceback" in runner.log()


def test_a_schedule_fires_repeatedly_at_the_overridden_interval(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    queues = make_queues(sqs)
    with runner_process(tmp_path, queues.name, observations_table, env={"RUNNER_SCHEDULE_INTERVAL_S": "1"}) as runner:

        def three_firings() -> list[dict[str, Any]] | None:
            found = observed(observations_table, runner.run_id, "schedule")
            return found if len(found) >= 3 else None

        firings = wait_for(three_firings, "three schedule firings")
    events = [firing["event"] for firing in firings]
    assert all(e["detail-type"] == "Scheduled Event" and e["source"] == "aws.events" for e in events)
    assert all(
        e["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/runner-fixture-dev-tick-event"] for e in events
    )
    assert len({e["id"] for e in events}) == len(events)
    assert len({firing["request_id"] for firing in firings}) == len(firings)
    assert {firing["function_name"] for firing in firings} == {"runner-fixture-dev-tick"}


def test_a_queue_created_after_the_runner_started_is_picked_up(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    name = f"runner-late-{uuid.uuid4().hex[:8]}"
    with runner_process(tmp_path, name, observations_table) as runner:
        wait_for(lambda: "AWS call failed" in runner.log(), "the poller to report the missing queue")
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        (sent,) = send(sqs, url, ["ok"])
        wait_for(lambda: [m for m, _, _ in deliveries(observations_table, runner.run_id)] == [sent], "the delivery")
        wait_for(lambda: queue_depth(sqs, url) == 0, "an empty queue")


def test_sigterm_lets_the_in_flight_batch_finish_and_exits_zero_leaving_no_process(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    queues = make_queues(sqs)
    (slow,) = send(sqs, queues.url, ["sleep:2"])
    with runner_process(tmp_path, queues.name, observations_table) as runner:
        started = wait_for(lambda: observed(observations_table, runner.run_id, "batch"), "the slow batch to start")
        runner.process.signal(signal.SIGTERM)
        assert runner.process.process is not None
        returncode = runner.process.process.wait(timeout=DEADLINE_S)
        assert returncode == 0, runner.log()
        # Checked before the context manager's stop() would SIGKILL leftovers.
        with pytest.raises(ProcessLookupError):
            os.killpg(runner.process.pid, 0)  # nothing left in the runner's process group
    done = observed(observations_table, runner.run_id, "done")
    assert [d["request_id"] for d in done] == [started[0]["request_id"]]
    assert queue_depth(sqs, queues.url) == 0, "the in-flight message was not deleted"
    assert started[0]["records"][0]["messageId"] == slow
    assert "runner stopped" in runner.log()
