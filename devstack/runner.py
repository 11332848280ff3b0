"""Local stand-in for Lambda's event sources: feeds SQS messages and schedules to a Chalice app's handlers."""

from __future__ import annotations

import argparse
import base64
import datetime
import importlib
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from chalice.app import BaseEventSourceConfig, Chalice, Cron, Rate, ScheduledEventConfig, SQSEventConfig

from devstack.lambda_context import DEFAULT_ACCOUNT, DEFAULT_REGION, DEFAULT_TIMEOUT_S, FunctionSpec

log = logging.getLogger("devstack.runner")

Handler = Callable[[dict[str, Any], Any], Any]

SQS_MAX_MESSAGES_PER_CALL = 10  # ReceiveMessage and DeleteMessageBatch both cap at 10
CRON_PERIOD_S = 60.0  # no cron parser: once a minute is the finest any cron rule fires
SCHEDULE_INTERVAL_ENV = "RUNNER_SCHEDULE_INTERVAL_S"
RATE_UNIT_S = {"MINUTE": 60, "MINUTES": 60, "HOUR": 3600, "HOURS": 3600, "DAY": 86_400, "DAYS": 86_400}
_RATE_STRING = re.compile(r"^\s*rate\(\s*(\d+)\s+([a-zA-Z]+)\s*\)\s*$")
_AWS_ERRORS = (BotoCoreError, ClientError)


# --- Event shapes and result semantics: pure functions, shared by every poller ---


def _b64(value: bytes | str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


def _lambda_message_attribute(attribute: Mapping[str, Any]) -> dict[str, Any]:
    """One message attribute as Lambda spells it: camelCase, binaries base64, list fields always present."""
    converted: dict[str, Any] = {}
    if "StringValue" in attribute:
        converted["stringValue"] = attribute["StringValue"]
    if "BinaryValue" in attribute:
        # boto3 hands back decoded bytes; the Lambda event carries base64 text.
        converted["binaryValue"] = _b64(attribute["BinaryValue"])
    converted["stringListValues"] = list(attribute.get("StringListValues", []))
    converted["binaryListValues"] = [_b64(item) for item in attribute.get("BinaryListValues", [])]
    converted["dataType"] = attribute["DataType"]
    return converted


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """A ReceiveMessage result message as one record of a Lambda SQS event."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": {name: str(value) for name, value in message.get("Attributes", {}).items()},
        "messageAttributes": {
            name: _lambda_message_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record.update(
        {
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
    )
    return record


def sqs_event(messages: Sequence[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping passes for one batch."""
    return {"Records": [sqs_record(message, queue_arn, region) for message in messages]}


def scheduled_event(rule_arn: str, region: str, account: str = DEFAULT_ACCOUNT) -> dict[str, Any]:
    """The event an EventBridge schedule rule passes to its target."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


@dataclass(frozen=True)
class BatchVerdict:
    """Which items of a batch Lambda would treat as failed, given the handler's outcome."""

    failed_ids: frozenset[str]
    whole_batch: bool = False
    reason: str = ""


def batch_verdict(result: Any, item_ids: Sequence[str]) -> BatchVerdict:
    """Lambda's reading of a handler's return value with ReportBatchItemFailures enabled.

    Item ids are SQS message ids here (Kinesis would pass sequence numbers).
    Success: None, any value without a batchItemFailures list, or an empty /
    null one. Whole batch failed: a response Lambda could not serialize, a
    batchItemFailures that is not a list, or any entry that is not
    {"itemIdentifier": <an id of this batch>} (AWS documents these cases).
    """
    everything = frozenset(item_ids)
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        # The Lambda runtime fails the invocation when it cannot marshal the response.
        return BatchVerdict(everything, True, f"response not JSON-serializable: {exc}")
    if not isinstance(result, dict):
        return BatchVerdict(frozenset())
    failures = result.get("batchItemFailures")
    if failures is None:
        return BatchVerdict(frozenset())
    if not isinstance(failures, list):
        return BatchVerdict(everything, True, "batchItemFailures is not a list")
    failed: set[str] = set()
    for entry in failures:
        identifier = entry.get("itemIdentifier") if isinstance(entry, dict) else None
        if not isinstance(identifier, str) or not identifier:
            return BatchVerdict(everything, True, f"invalid batchItemFailures entry {entry!r}")
        if identifier not in everything:
            return BatchVerdict(everything, True, f"itemIdentifier {identifier!r} is not in the batch")
        failed.add(identifier)
    return BatchVerdict(frozenset(failed))


def messages_to_delete(messages: Sequence[Mapping[str, Any]], verdict: BatchVerdict) -> list[Mapping[str, Any]]:
    """The received messages Lambda would delete: all except the failed ones."""
    if verdict.whole_batch:
        return []
    return [message for message in messages if message["MessageId"] not in verdict.failed_ids]


def schedule_period_s(expression: str | Rate | Cron | Any) -> float:
    """Seconds between firings of a Chalice schedule expression (cron rules: once a minute)."""
    if isinstance(expression, Rate):
        return float(expression.value * RATE_UNIT_S[expression.unit.upper()])
    if isinstance(expression, str):
        match = _RATE_STRING.match(expression)
        if match and match.group(2).upper() in RATE_UNIT_S:
            return float(int(match.group(1)) * RATE_UNIT_S[match.group(2).upper()])
    return CRON_PERIOD_S


# --- Invoking a handler as Lambda would ---


@dataclass
class Invocation:
    """What happened when a handler ran once."""

    result: Any = None
    error: BaseException | None = None
    duration_ms: float = 0.0
    request_id: str = ""

    @property
    def failed(self) -> bool:
        return self.error is not None


class FunctionTimeout(Exception):
    """The handler ran past the function timeout; Lambda would have cut it off and failed the invocation."""


@dataclass(frozen=True)
class LocalFunction:
    """One Chalice handler with the Lambda configuration it runs under."""

    name: str
    handler: Handler
    spec: FunctionSpec

    def invoke(self, event: dict[str, Any]) -> Invocation:
        context = self.spec.new_context()
        started = time.monotonic()
        outcome = Invocation(request_id=context.aws_request_id)
        try:
            outcome.result = self.handler(event, context)
        except (Exception, SystemExit) as exc:
            # SystemExit too: on Lambda it fails the invocation, here it would
            # silently end the poller thread.
            outcome.error = exc
            log.error("handler %s raised (request %s)", self.name, context.aws_request_id, exc_info=exc)
        outcome.duration_ms = (time.monotonic() - started) * 1000
        if outcome.error is None and outcome.duration_ms > self.spec.timeout_s * 1000:
            # A thread cannot be cut off, but its result must count as lost,
            # so that messages are redelivered here exactly as on AWS.
            outcome.error = FunctionTimeout(f"{self.name} ran {outcome.duration_ms:.0f} ms > {self.spec.timeout_s} s")
            log.error("handler %s exceeded the function timeout; treated as failed", self.name)
        return outcome


# --- Workers: one thread each, turning an event source into invocations ---


class Worker(ABC):
    """A thread that repeatedly polls one event source; errors are logged, never fatal.

    A Kinesis poller is one more subclass (per-shard iterators, batch_verdict
    on sequence numbers) plus one more branch in Runner._workers_for.
    """

    def __init__(self, name: str, source_name: str, error_backoff_s: float = 1.0) -> None:
        self.name = name
        self.source_name = source_name
        self.error_backoff_s = error_backoff_s
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._consecutive_errors = 0

    def start(self) -> None:
        # Daemon: if an invocation outlives the shutdown grace period the
        # process still exits; its messages reappear after their visibility timeout.
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        self.stopping.set()

    def join(self, timeout_s: float) -> bool:
        if self._thread is not None:
            self._thread.join(max(0.0, timeout_s))
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll_once()
            except _AWS_ERRORS as exc:
                self._note_error(exc)
                self.stopping.wait(self.error_backoff_s)
            except Exception:
                log.exception("%s: unexpected error; retrying", self.name)
                self.stopping.wait(self.error_backoff_s)
            else:
                if self._consecutive_errors:
                    log.info("%s: recovered after %d errors", self.name, self._consecutive_errors)
                    self._consecutive_errors = 0

    def _note_error(self, exc: BaseException) -> None:
        # First error and every tenth after it: an emulator that is down for a
        # while should not flood the log once a second.
        self._consecutive_errors += 1
        if self._consecutive_errors % 10 == 1:
            log.warning("%s: AWS call failed (%d in a row), retrying: %s", self.name, self._consecutive_errors, exc)

    @abstractmethod
    def poll_once(self) -> Any:
        """Wait briefly for work, do one unit of it, return a report (or None if there was none)."""


@dataclass
class BatchReport:
    """One SQS batch: what was invoked, what Lambda semantics say to delete, and what was deleted."""

    function: str
    message_ids: list[str]
    invocation: Invocation
    verdict: BatchVerdict
    deleted_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SqsSource:
    """The parts of an SQSEventConfig that drive polling (the same values `chalice package` deploys)."""

    name: str
    queue_name: str
    batch_size: int
    window_s: float

    @classmethod
    def from_config(cls, config: SQSEventConfig) -> SqsSource:
        queue_name = config.queue or (config.queue_arn or "").rsplit(":", 1)[-1]
        return cls(config.name, queue_name, config.batch_size, float(config.maximum_batching_window_in_seconds))


class SqsPoller(Worker):
    """One concurrent batch of an SQS event source mapping: receive, invoke, delete what succeeded.

    Never changes message visibility: failed messages come back after their
    visibility timeout (or sooner if the handler shortened it) and the queue's
    RedrivePolicy moves them to the DLQ, as on AWS.
    """

    def __init__(
        self,
        source: SqsSource,
        function: LocalFunction,
        sqs_client: Any,
        region: str,
        name: str | None = None,
        poll_wait_s: int = 1,
        error_backoff_s: float = 1.0,
    ) -> None:
        super().__init__(name or f"sqs:{source.name}", source.name, error_backoff_s)
        self.source = source
        self.function = function
        self.sqs = sqs_client
        self.region = region
        self.poll_wait_s = poll_wait_s
        self.queue_url: str | None = None
        self.queue_arn: str | None = None

    def resolve_queue(self) -> None:
        if self.queue_url is None:
            self.queue_url = str(self.sqs.get_queue_url(QueueName=self.source.queue_name)["QueueUrl"])
        if self.queue_arn is None:
            attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
            self.queue_arn = str(attributes["Attributes"]["QueueArn"])
            log.info("%s: polling %s (batch %d)", self.name, self.queue_arn, self.source.batch_size)

    def _receive(self, max_messages: int, wait_s: int) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max(1, min(max_messages, SQS_MAX_MESSAGES_PER_CALL)),
            WaitTimeSeconds=wait_s,
            # Both spellings: older endpoints only know AttributeNames.
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def collect_batch(self) -> list[dict[str, Any]]:
        """One receive; with a batching window, more receives until batch_size or the window ends."""
        started = time.monotonic()
        messages = self._receive(self.source.batch_size, self.poll_wait_s)
        if not messages:
            # Guard against an endpoint that ignores WaitTimeSeconds: no busy loop.
            self.stopping.wait(max(0.0, self.poll_wait_s - (time.monotonic() - started)))
            return []
        if self.source.window_s <= 0:
            return messages
        deadline = time.monotonic() + self.source.window_s
        while len(messages) < self.source.batch_size and not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                messages += self._receive(
                    self.source.batch_size - len(messages), min(self.poll_wait_s, math.ceil(remaining))
                )
            except _AWS_ERRORS as exc:
                # Invoke with what is in hand rather than let it sit invisible.
                log.warning("%s: receive failed inside the batching window: %s", self.name, exc)
                break
        return messages

    def poll_once(self) -> BatchReport | None:
        self.resolve_queue()
        messages = self.collect_batch()
        if not messages:
            return None
        return self.process(messages)

    def process(self, messages: Sequence[Mapping[str, Any]]) -> BatchReport:
        assert self.queue_arn is not None, "resolve_queue() first"
        message_ids = [str(message["MessageId"]) for message in messages]
        invocation = self.function.invoke(sqs_event(messages, self.queue_arn, self.region))
        if invocation.failed:
            verdict = BatchVerdict(frozenset(message_ids), True, f"handler failed: {invocation.error!r}")
        else:
            verdict = batch_verdict(invocation.result, message_ids)
            if verdict.whole_batch:
                log.error("%s: whole batch failed: %s", self.function.name, verdict.reason)
        report = BatchReport(self.function.name, message_ids, invocation, verdict)
        report.deleted_ids = self.delete(messages_to_delete(messages, verdict))
        log.info(
            "invoked %s records=%d failures=%d duration_ms=%.0f request=%s",
            self.function.name,
            len(messages),
            len(messages) - len(report.deleted_ids),
            invocation.duration_ms,
            invocation.request_id,
        )
        return report

    def delete(self, messages: Sequence[Mapping[str, Any]]) -> list[str]:
        """DeleteMessageBatch in chunks of 10; returns the ids actually deleted."""
        deleted: list[str] = []
        for offset in range(0, len(messages), SQS_MAX_MESSAGES_PER_CALL):
            chunk = messages[offset : offset + SQS_MAX_MESSAGES_PER_CALL]
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
            try:
                response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except _AWS_ERRORS as exc:
                # At-least-once, as on AWS: these messages will be delivered again.
                log.warning(
                    "%s: could not delete %d messages, they will be redelivered: %s", self.name, len(chunk), exc
                )
                continue
            for failure in response.get("Failed", []):
                log.warning("%s: delete failed for entry %s: %s", self.name, failure.get("Id"), failure.get("Message"))
            deleted += [str(chunk[int(ok["Id"])]["MessageId"]) for ok in response.get("Successful", [])]
        return deleted


class ScheduleFirer(Worker):
    """An EventBridge schedule rule: invokes its target every period, first one period after start."""

    def __init__(
        self, function: LocalFunction, rule_arn: str, region: str, period_s: float, name: str | None = None
    ) -> None:
        super().__init__(name or f"schedule:{function.name}", function.name)
        self.function = function
        self.rule_arn = rule_arn
        self.region = region
        self.period_s = period_s
        self._next_fire: float | None = None

    def fire(self) -> Invocation:
        invocation = self.function.invoke(scheduled_event(self.rule_arn, self.region))
        log.info(
            "invoked %s records=1 failures=%d duration_ms=%.0f request=%s",
            self.function.name,
            int(invocation.failed),
            invocation.duration_ms,
            invocation.request_id,
        )
        return invocation

    def poll_once(self) -> Invocation | None:
        now = time.monotonic()
        if self._next_fire is None:
            self._next_fire = now + self.period_s
        if self.stopping.wait(max(0.0, self._next_fire - now)):
            return None
        # A fixed cadence that skips missed ticks, as EventBridge does after a slow run.
        self._next_fire = max(self._next_fire + self.period_s, time.monotonic())
        return self.fire()


# --- The runner: builds workers from app.event_sources ---


@dataclass(frozen=True)
class RunnerOptions:
    sqs_concurrency: int = 1
    schedule_interval_s: float | None = None
    function_timeout_s: float = DEFAULT_TIMEOUT_S
    stage: str = "dev"  # Chalice's default stage, so names match `chalice local` / `chalice deploy`
    poll_wait_s: int = 1  # long-poll seconds: short, so that shutdown is prompt
    error_backoff_s: float = 1.0


class Runner:
    """Runs a Chalice app's SQS and schedule handlers the way Lambda's event sources would."""

    def __init__(
        self,
        app: Chalice,
        options: RunnerOptions | None = None,
        sqs_client: Any = None,
        region: str | None = None,
    ) -> None:
        self.app = app
        self.options = options or RunnerOptions()
        self._sqs_client = sqs_client
        self.region = region or _region_of(sqs_client)
        self._workers: list[Worker] | None = None

    def _new_sqs_client(self) -> Any:
        if self._sqs_client is not None:
            return self._sqs_client
        # A client per poller, created here on the calling thread: boto3's
        # default session is not thread-safe, its clients are.
        return boto3.session.Session().client(
            "sqs",
            region_name=self.region,
            config=Config(
                connect_timeout=2,
                read_timeout=self.options.poll_wait_s + 10,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def function(self, name: str) -> LocalFunction:
        spec = FunctionSpec(
            function_name=f"{self.app.app_name}-{self.options.stage}-{name}",
            timeout_s=self.options.function_timeout_s,
            region=self.region,
        )
        return LocalFunction(name, self.app.handler_map[name], spec)

    def _workers_for(self, source: BaseEventSourceConfig) -> list[Worker]:
        opts = self.options
        if isinstance(source, SQSEventConfig):
            sqs_source = SqsSource.from_config(source)
            return [
                SqsPoller(
                    sqs_source,
                    self.function(source.name),
                    self._new_sqs_client(),
                    self.region,
                    name=f"sqs:{source.name}#{index}",
                    poll_wait_s=opts.poll_wait_s,
                    error_backoff_s=opts.error_backoff_s,
                )
                for index in range(opts.sqs_concurrency)
            ]
        if isinstance(source, ScheduledEventConfig):
            rule_name = f"{self.app.app_name}-{opts.stage}-{source.name}-event"
            rule_arn = f"arn:aws:events:{self.region}:{DEFAULT_ACCOUNT}:rule/{rule_name}"
            period = opts.schedule_interval_s or schedule_period_s(source.schedule_expression)
            return [ScheduleFirer(self.function(source.name), rule_arn, self.region, period)]
        log.info("event source %s (%s) is not run locally", source.name, type(source).__name__)
        return []

    @property
    def workers(self) -> list[Worker]:
        if self._workers is None:
            self._workers = [w for source in self.app.event_sources for w in self._workers_for(source)]
        return self._workers

    def worker(self, source_name: str) -> Worker:
        """The (first) worker of the named event source, for one-shot use in tests."""
        for candidate in self.workers:
            if candidate.source_name == source_name:
                return candidate
        raise KeyError(source_name)

    def run_once_sqs(self, source_name: str) -> BatchReport | None:
        """One receive-invoke-delete cycle of an SQS source, on the calling thread."""
        poller = self.worker(source_name)
        assert isinstance(poller, SqsPoller), f"{source_name} is not an SQS source"
        return poller.poll_once()

    def fire_schedule(self, source_name: str) -> Invocation:
        """Invoke a schedule handler once, now, on the calling thread."""
        firer = self.worker(source_name)
        assert isinstance(firer, ScheduleFirer), f"{source_name} is not a schedule"
        return firer.fire()

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        log.info("runner started %d workers: %s", len(self.workers), ", ".join(w.name for w in self.workers))

    def stop(self, grace_s: float = 8.0) -> bool:
        """Stop receiving, wait up to grace_s for in-flight invocations; True if all finished."""
        for worker in self.workers:
            worker.request_stop()
        deadline = time.monotonic() + grace_s
        unfinished = [w.name for w in self.workers if not w.join(deadline - time.monotonic())]
        if unfinished:
            log.warning("still running after %.0f s, abandoned: %s", grace_s, ", ".join(unfinished))
        return not unfinished


def _region_of(client: Any) -> str:
    region = getattr(getattr(client, "meta", None), "region_name", None)
    return str(region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION)


def load_app(spec: str) -> Chalice:
    """Import `module:attr` (default attr `app`) and check that it is a Chalice app."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `app.py` at the repo root, as `chalice local` finds it
    app = getattr(importlib.import_module(module_name), attr or "app")
    if not isinstance(app, Chalice):
        raise TypeError(f"{spec} is a {type(app).__name__}, not a Chalice app")
    return app


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devstack.runner", description=__doc__)
    parser.add_argument("--app", default="app:app", help="import spec of the Chalice app (default app:app)")
    parser.add_argument("--sqs-concurrency", type=int, default=1, help="concurrent batches per SQS source")
    env_interval = os.environ.get(SCHEDULE_INTERVAL_ENV)
    parser.add_argument(
        "--schedule-interval",
        type=float,
        default=float(env_interval) if env_interval else None,
        help=f"seconds between firings of every schedule (default: from the expression, or ${SCHEDULE_INTERVAL_ENV})",
    )
    parser.add_argument("--function-timeout", type=float, default=DEFAULT_TIMEOUT_S, help="Lambda timeout, seconds")
    parser.add_argument("--stage", default="dev", help="Chalice stage used in function and rule names")
    parser.add_argument("--shutdown-grace", type=float, default=8.0, help="seconds to let in-flight work finish")
    parser.add_argument("--log-level", default=os.environ.get("RUNNER_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if args.sqs_concurrency < 1:
        parser.error("--sqs-concurrency must be at least 1")
    if args.schedule_interval is not None and args.schedule_interval <= 0:
        parser.error("--schedule-interval must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
    )
    # botocore announces credentials and endpoints at INFO for every new client.
    logging.getLogger("botocore").setLevel(max(logging.getLogger().level, logging.WARNING))
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()
        # A second signal ends the process at once instead of waiting for in-flight work.
        signal.signal(signum, signal.SIG_DFL)

    # Installed before the app is imported so an early SIGTERM is still a clean stop.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        app = load_app(args.app)
    except Exception:
        log.exception("could not load the Chalice app %s", args.app)
        return 2
    runner = Runner(
        app,
        RunnerOptions(
            sqs_concurrency=args.sqs_concurrency,
            schedule_interval_s=args.schedule_interval,
            function_timeout_s=args.function_timeout,
            stage=args.stage,
        ),
    )
    runner.start()
    print("runner ready", flush=True)
    # Short waits rather than one long one: the main thread must get back to
    # the interpreter loop for the signal handler to run.
    while not stop_requested.wait(0.5):
        pass
    runner.stop(args.shutdown_grace)
    log.info("runner stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
