"""The local runner in process: Lambda-shaped events, batch verdicts, mapping settings, and workers over fakes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Logger
from botocore.exceptions import EndpointConnectionError
from chalice.app import Chalice, Cron, Rate

from devstack.lambda_context import FunctionSpec
from devstack.runner.app_runner import Runner
from devstack.runner.cli import parse_args
from devstack.runner.events import scheduled_event, sqs_event
from devstack.runner.invocation import Invocation
from devstack.runner.options import RunnerOptions
from devstack.runner.schedule import schedule_period_s
from devstack.runner.settings import DEFAULT_EVENT_SOURCES_PATH, EventSourcesError, MappingSettings, load_event_sources
from devstack.runner.verdicts import BatchVerdict, batch_verdict, lambda_verdict, messages_to_delete
from tests.tooling.runner_support import REPORT_FAILURES, wait_for

pytestmark = pytest.mark.integration


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
def test_one_schedule_can_have_an_interval_of_its_own() -> None:
    args = parse_args(["--schedule-interval", "1", "--schedule-interval-of", "slow=30"])
    assert (args.schedule_interval, args.schedule_intervals) == (1, {"slow": 30})
    app = Chalice(app_name="two-schedules")

    @app.schedule(Rate(1, unit=Rate.MINUTES))
    def fast(event: Any) -> None: ...

    @app.schedule(Rate(5, unit=Rate.MINUTES))
    def slow(event: Any) -> None: ...

    options = RunnerOptions(schedule_interval_s=args.schedule_interval, schedule_intervals=args.schedule_intervals)
    runner = Runner(app, options, region="us-east-1")
    periods = {worker.name: getattr(worker, "period_s", None) for worker in runner.workers}
    assert periods == {"schedule:fast": 1, "schedule:slow": 30}
    with pytest.raises(SystemExit):
        parse_args(["--schedule-interval-of", "slow=0"])


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
