"""Local stand-in for Lambda's event sources: feeds SQS messages, Kinesis records and schedules to a Chalice app."""

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from chalice.app import (
    BaseEventSourceConfig,
    Chalice,
    Cron,
    KinesisEventConfig,
    Rate,
    ScheduledEventConfig,
    SQSEventConfig,
)

from devstack.lambda_context import DEFAULT_ACCOUNT, DEFAULT_REGION, DEFAULT_TIMEOUT_S, FunctionSpec

log = logging.getLogger("devstack.runner")

Handler = Callable[[dict[str, Any], Any], Any]

SQS_MAX_MESSAGES_PER_CALL = 10  # ReceiveMessage and DeleteMessageBatch both cap at 10
CRON_PERIOD_S = 60.0  # no cron parser: once a minute is the finest any cron rule fires
SCHEDULE_INTERVAL_ENV = "RUNNER_SCHEDULE_INTERVAL_S"
RATE_UNIT_S = {"MINUTE": 60, "MINUTES": 60, "HOUR": 3600, "HOURS": 3600, "DAY": 86_400, "DAYS": 86_400}
_RATE_STRING = re.compile(r"^\s*rate\(\s*(\d+)\s+([a-zA-Z]+)\s*\)\s*$")
_AWS_ERRORS = (BotoCoreError, ClientError)

# Resolved from this file, not the cwd, as devstack/provision.py finds the template.
DEFAULT_EVENT_SOURCES_PATH = Path(__file__).resolve().parent.parent / "infra" / "event_sources.json"
DEFAULT_CHECKPOINT_TABLE = "runner-checkpoints"
DEFAULT_STACK_NAME = "brokerage-local"  # devstack/stack.py names the stack after RESOURCE_PREFIX, this by default
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"
UNHANDLED = "Unhandled"  # Lambda's functionError for an exception, a timeout or an unserializable response
RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"
KINESIS_GET_RECORDS_INTERVAL_S = 0.2  # Kinesis allows 5 GetRecords calls per second per shard
# Lambda's own API limits; a value outside them would fail the deployment, so it fails here first.
MAX_RETRY_ATTEMPTS_LIMIT = 10_000
RECORD_AGE_LIMITS_S = (60, 604_800)


# --- Event source mapping settings that Chalice cannot express (infra/event_sources.json) ---


class EventSourcesError(ValueError):
    """The event source settings say something Lambda's CreateEventSourceMapping would refuse."""


@dataclass(frozen=True)
class MappingSettings:
    """One handler's entry of infra/event_sources.json; the defaults are Lambda's when the entry is absent."""

    function_response_types: tuple[str, ...] = ()
    bisect_batch_on_function_error: bool = False
    maximum_retry_attempts: int = -1  # -1: retry until the records expire (Lambda's default)
    maximum_record_age_in_seconds: int = -1  # -1: no age limit (Lambda's default)
    on_failure_destination_output: str | None = None  # a stack Output holding the destination queue's ARN

    @property
    def report_batch_item_failures(self) -> bool:
        return REPORT_BATCH_ITEM_FAILURES in self.function_response_types

    @property
    def stream_only_settings(self) -> list[str]:
        """The settings given that only stream (Kinesis, DynamoDB) mappings accept."""
        defaults = MappingSettings()
        names = [
            "bisect_batch_on_function_error",
            "maximum_retry_attempts",
            "maximum_record_age_in_seconds",
            "on_failure_destination_output",
        ]
        return [name for name in names if getattr(self, name) != getattr(defaults, name)]

    def retry_policy(self) -> StreamRetryPolicy:
        return StreamRetryPolicy(
            bisect_on_function_error=self.bisect_batch_on_function_error,
            maximum_retry_attempts=None if self.maximum_retry_attempts < 0 else self.maximum_retry_attempts,
            maximum_record_age_s=None if self.maximum_record_age_in_seconds < 0 else self.maximum_record_age_in_seconds,
        )

    @classmethod
    def from_json(cls, handler: str, raw: Any) -> MappingSettings:
        """Validate one entry the way Lambda's API would, so a mistake shows up locally, not at deployment."""
        if not isinstance(raw, dict):
            raise EventSourcesError(f"{handler}: expected an object, got {type(raw).__name__}")
        known = {name for name in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise EventSourcesError(f"{handler}: unknown settings {unknown} (known: {sorted(known)})")
        types = raw.get("function_response_types", [])
        if not isinstance(types, list) or any(value != REPORT_BATCH_ITEM_FAILURES for value in types):
            raise EventSourcesError(
                f"{handler}: function_response_types must be [] or [{REPORT_BATCH_ITEM_FAILURES!r}]"
            )
        bisect = raw.get("bisect_batch_on_function_error", False)
        if not isinstance(bisect, bool):
            raise EventSourcesError(f"{handler}: bisect_batch_on_function_error must be true or false")
        retries = _int_setting(handler, raw, "maximum_retry_attempts")
        if not -1 <= retries <= MAX_RETRY_ATTEMPTS_LIMIT:
            raise EventSourcesError(f"{handler}: maximum_retry_attempts must be -1..{MAX_RETRY_ATTEMPTS_LIMIT}")
        age = _int_setting(handler, raw, "maximum_record_age_in_seconds")
        if age != -1 and not RECORD_AGE_LIMITS_S[0] <= age <= RECORD_AGE_LIMITS_S[1]:
            low, high = RECORD_AGE_LIMITS_S
            raise EventSourcesError(f"{handler}: maximum_record_age_in_seconds must be -1 or {low}..{high}")
        output = raw.get("on_failure_destination_output")
        if output is not None and (not isinstance(output, str) or not output):
            raise EventSourcesError(f"{handler}: on_failure_destination_output must be a stack output name")
        return cls(tuple(types), bisect, retries, age, output)


def _int_setting(handler: str, raw: Mapping[str, Any], name: str) -> int:
    value = raw.get(name, -1)
    if isinstance(value, bool) or not isinstance(value, int):  # bool is an int subclass: true must not mean 1
        raise EventSourcesError(f"{handler}: {name} must be an integer")
    return value


def load_event_sources(path: Path | str) -> dict[str, MappingSettings]:
    """The settings file, keyed by Chalice handler name."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EventSourcesError(f"cannot read event source settings {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise EventSourcesError(f"{path}: expected an object keyed by handler name")
    return {str(handler): MappingSettings.from_json(str(handler), entry) for handler, entry in raw.items()}


# --- Event shapes and result semantics: pure functions, shared by every poller ---


def _b64(value: bytes | str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


def _epoch_s(value: Any) -> float:
    """A boto3 timestamp (an aware datetime) or epoch number as epoch seconds."""
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return float(value)


def _iso_ms(epoch_s: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z, as Lambda writes invocation records."""
    moment = datetime.datetime.fromtimestamp(epoch_s, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def kinesis_record(
    record: Mapping[str, Any], shard_id: str, stream_arn: str, region: str, identity_arn: str
) -> dict[str, Any]:
    """A GetRecords result record as one record of a Lambda Kinesis event."""
    sequence_number = str(record["SequenceNumber"])
    kinesis: dict[str, Any] = {
        "kinesisSchemaVersion": "1.0",
        "partitionKey": record["PartitionKey"],
        "sequenceNumber": sequence_number,
        # boto3 hands back decoded bytes; the Lambda event carries base64 text.
        "data": _b64(record["Data"]),
        # Lambda sends epoch seconds with milliseconds, e.g. 1545084650.987.
        "approximateArrivalTimestamp": round(_epoch_s(record["ApproximateArrivalTimestamp"]), 3),
    }
    if record.get("EncryptionType") not in (None, "NONE"):
        kinesis["encryptionType"] = record["EncryptionType"]  # present only for server-side encrypted records
    return {
        "kinesis": kinesis,
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        # Sequence numbers repeat across shards (always on moto): the shard makes the id unique.
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": identity_arn,
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


def kinesis_event(
    records: Sequence[Mapping[str, Any]], shard_id: str, stream_arn: str, region: str, identity_arn: str
) -> dict[str, Any]:
    """The event Lambda's Kinesis event source mapping passes for one batch of one shard."""
    return {"Records": [kinesis_record(record, shard_id, stream_arn, region, identity_arn) for record in records]}


def kinesis_failure_record(
    discard: Discard, shard_id: str, stream_arn: str, function: FunctionSpec, now_s: float
) -> dict[str, Any]:
    """The invocation record Lambda sends to a Kinesis mapping's on-failure destination for discarded records."""
    first, last = discard.records[0], discard.records[-1]
    message: dict[str, Any] = {
        "requestContext": {
            # Records that expired before any invocation have no request of their own.
            "requestId": discard.request_id or str(uuid.uuid4()),
            "functionArn": function.invoked_function_arn,
            "condition": discard.condition,
            "approximateInvokeCount": discard.invocations,
        }
    }
    if discard.invocations:
        response: dict[str, Any] = {"statusCode": 200, "executedVersion": function.function_version}
        if discard.function_error:
            # Absent when the function answered with a partial batch failure: it did not error.
            response["functionError"] = discard.function_error
        message["responseContext"] = response
    message.update(
        {
            "version": "1.0",
            "timestamp": _iso_ms(now_s),
            "KinesisBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": str(first["SequenceNumber"]),
                "endSequenceNumber": str(last["SequenceNumber"]),
                "approximateArrivalOfFirstRecord": _iso_ms(_epoch_s(first["ApproximateArrivalTimestamp"])),
                "approximateArrivalOfLastRecord": _iso_ms(_epoch_s(last["ApproximateArrivalTimestamp"])),
                "batchSize": len(discard.records),
                "streamArn": stream_arn,
            },
        }
    )
    return message


@dataclass(frozen=True)
class BatchVerdict:
    """Which items of a batch Lambda would treat as failed, given the handler's outcome."""

    failed_ids: frozenset[str]
    whole_batch: bool = False
    reason: str = ""
    function_error: bool = False  # the invocation itself failed (raised, timed out, unserializable response)


def batch_verdict(result: Any, item_ids: Sequence[str]) -> BatchVerdict:
    """Lambda's reading of a handler's return value with ReportBatchItemFailures enabled.

    Item ids are SQS message ids or Kinesis sequence numbers. Success: None,
    any value without a batchItemFailures list, or an empty / null one. Whole
    batch failed: a response Lambda could not serialize, a batchItemFailures
    that is not a list, or any entry that is not {"itemIdentifier": <an id of
    this batch>} (AWS documents these cases).
    """
    everything = frozenset(item_ids)
    unserializable = _unserializable(result, item_ids)
    if unserializable is not None:
        return unserializable
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


def _unserializable(result: Any, item_ids: Sequence[str] = ()) -> BatchVerdict | None:
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        # The Lambda runtime fails the invocation when it cannot marshal the response.
        return BatchVerdict(frozenset(item_ids), True, f"response not JSON-serializable: {exc}", function_error=True)
    return None


def lambda_verdict(invocation: Invocation, item_ids: Sequence[str], report_batch_item_failures: bool) -> BatchVerdict:
    """How Lambda reads one invocation of a batch, with or without ReportBatchItemFailures on the mapping.

    Without it, AWS ignores a returned batchItemFailures: the invocation's
    success alone decides, for the whole batch.
    """
    everything = frozenset(item_ids)
    if invocation.failed:
        return BatchVerdict(everything, True, f"handler failed: {invocation.error!r}", function_error=True)
    if report_batch_item_failures:
        return batch_verdict(invocation.result, item_ids)
    unserializable = _unserializable(invocation.result, item_ids)
    if unserializable is not None:
        return unserializable
    if isinstance(invocation.result, dict) and invocation.result.get("batchItemFailures"):
        # Silent on AWS; said here because it is almost always a missing setting.
        log.warning(
            "handler returned batchItemFailures but its mapping lacks %s: ignored, the batch counts as a success",
            REPORT_BATCH_ITEM_FAILURES,
        )
    return BatchVerdict(frozenset())


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


# --- Stream retries: what Lambda does after each invocation of a shard's batch (pure functions) ---


@dataclass(frozen=True)
class StreamRetryPolicy:
    """A stream mapping's BisectBatchOnFunctionError, MaximumRetryAttempts and MaximumRecordAgeInSeconds."""

    bisect_on_function_error: bool = False
    maximum_retry_attempts: int | None = None  # None: retry until the records expire
    maximum_record_age_s: float | None = None  # None: no age limit


@dataclass(frozen=True)
class Segment:
    """Consecutive records of one shard still to be delivered, with their failure history."""

    records: tuple[Mapping[str, Any], ...]
    invocations: int = 0  # invocations so far that included these records
    retries: int = 0  # retries consumed; splitting a batch consumes none (AWS documents this)
    function_error: str | None = None  # of the last failed invocation, for the destination record
    request_id: str = ""  # of the last failed invocation

    @property
    def sequence_numbers(self) -> list[str]:
        return [str(record["SequenceNumber"]) for record in self.records]


@dataclass(frozen=True)
class StreamFailure:
    """How Lambda read a failed invocation of a segment."""

    first_failed: int  # index of the first record to deliver again; 0 means the whole batch
    function_error: str | None  # "Unhandled" if the invocation errored; None for failures it reported
    request_id: str
    bisectable: bool  # the whole batch failed, so BisectBatchOnFunctionError may split it
    reason: str = ""


@dataclass(frozen=True)
class Discard:
    """Records Lambda gives up on; their metadata goes to the on-failure destination."""

    records: tuple[Mapping[str, Any], ...]
    condition: str  # RetryAttemptsExhausted or RecordAgeExceeded
    invocations: int
    function_error: str | None = None
    request_id: str = ""


@dataclass(frozen=True)
class StreamPlan:
    """What follows one invocation: where the checkpoint may move, what to deliver next, what to give up."""

    checkpoint: str | None  # the last sequence number done with (processed or discarded), if any
    next: tuple[Segment, ...] = ()  # replaces the invoked segment at the head of the shard's work
    discard: Discard | None = None


def stream_failure(verdict: BatchVerdict, sequence_numbers: Sequence[str], request_id: str) -> StreamFailure | None:
    """The failure in a verdict on a shard's batch, or None if the batch succeeded."""
    if verdict.whole_batch:
        return StreamFailure(0, UNHANDLED if verdict.function_error else None, request_id, True, verdict.reason)
    if not verdict.failed_ids:
        return None
    # Compared as numbers: AWS's are decimal strings of varying length, where string order is wrong.
    lowest = min(verdict.failed_ids, key=int)
    index = list(sequence_numbers).index(lowest)
    return StreamFailure(index, None, request_id, False, f"record {lowest} reported failed")


def plan_stream_retry(segment: Segment, failure: StreamFailure | None, policy: StreamRetryPolicy) -> StreamPlan:
    """Lambda's next step for a shard after one invocation of `segment` (no clock, no I/O).

    - Success: checkpoint the last record.
    - Failures reported with ReportBatchItemFailures: checkpoint the record
      before the lowest reported one and deliver the rest of the batch again,
      as a retry ("bisected at the returned sequence number").
    - The whole batch failed (an error, or a report Lambda rejects): with
      BisectBatchOnFunctionError and more than one record, deliver the two
      halves in turn, consuming no retry; otherwise retry the whole batch.
    - A retry beyond MaximumRetryAttempts discards those records instead,
      and the checkpoint moves past them.
    """
    records = segment.records
    if failure is None:
        return StreamPlan(str(records[-1]["SequenceNumber"]))
    done, rest = records[: failure.first_failed], records[failure.first_failed :]
    checkpoint = str(done[-1]["SequenceNumber"]) if done else None
    invocations = segment.invocations + 1

    def follow_up(part: tuple[Mapping[str, Any], ...], retries: int) -> Segment:
        return Segment(part, invocations, retries, failure.function_error, failure.request_id)

    if failure.bisectable and policy.bisect_on_function_error and len(rest) > 1:
        middle = len(rest) // 2
        return StreamPlan(
            checkpoint, (follow_up(rest[:middle], segment.retries), follow_up(rest[middle:], segment.retries))
        )
    retries = segment.retries + 1
    limit = policy.maximum_retry_attempts
    if limit is not None and retries > limit:
        discard = Discard(rest, RETRY_ATTEMPTS_EXHAUSTED, invocations, failure.function_error, failure.request_id)
        return StreamPlan(str(rest[-1]["SequenceNumber"]), (), discard)
    return StreamPlan(checkpoint, (follow_up(rest, retries),))


def expire_records(
    segment: Segment, now_s: float, maximum_record_age_s: float | None
) -> tuple[Segment | None, Discard | None]:
    """Split off the records older than the maximum record age: the segment that is left, and the discard."""
    if maximum_record_age_s is None:
        return segment, None
    expired = 0
    for record in segment.records:
        # A prefix: a shard's records arrive in order, so the oldest come first.
        if now_s - _epoch_s(record["ApproximateArrivalTimestamp"]) <= maximum_record_age_s:
            break
        expired += 1
    if not expired:
        return segment, None
    discard = Discard(
        segment.records[:expired], RECORD_AGE_EXCEEDED, segment.invocations, segment.function_error, segment.request_id
    )
    rest = segment.records[expired:]
    return (replace(segment, records=rest) if rest else None), discard


def retry_backoff_s(retries: int, base_s: float, cap_s: float) -> float:
    """Pause before a retry: none for a first delivery or a bisected half, then doubling up to a cap."""
    if retries <= 0:
        return 0.0
    return float(min(cap_s, base_s * 2 ** (retries - 1)))


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


class SourceUnavailable(Exception):
    """Something a poller needs is missing (a stack output, a queue): logged and retried like an AWS error."""


_RETRYABLE = (*_AWS_ERRORS, SourceUnavailable)


class Worker(ABC):
    """A thread that repeatedly polls one event source; errors are logged, never fatal."""

    def __init__(self, name: str, source_name: str, error_backoff_s: float = 1.0) -> None:
        self.name = name
        self.source_name = source_name
        self.error_backoff_s = error_backoff_s
        self.stopping = threading.Event()
        self.finished = False  # set by a worker whose source has ended (a closed Kinesis shard)
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
        while not self.stopping.is_set() and not self.finished:
            try:
                self.poll_once()
            except _RETRYABLE as exc:
                self._note_error(exc)
                self.stopping.wait(self.error_backoff_s)
            except Exception:
                log.exception("%s: unexpected error; retrying", self.name)
                self.stopping.wait(self.error_backoff_s)
            else:
                if self._consecutive_errors:
                    log.info("%s: recovered after %d errors", self.name, self._consecutive_errors)
                    self._consecutive_errors = 0
        self.on_stop()

    def _note_error(self, exc: BaseException) -> None:
        # First error and every tenth after it: an emulator that is down for a
        # while should not flood the log once a second.
        self._consecutive_errors += 1
        if self._consecutive_errors % 10 == 1:
            log.warning("%s: AWS call failed (%d in a row), retrying: %s", self.name, self._consecutive_errors, exc)

    @abstractmethod
    def poll_once(self) -> Any:
        """Wait briefly for work, do one unit of it, return a report (or None if there was none)."""

    def on_stop(self) -> None:  # noqa: B027 - a hook: most workers have nothing to save
        """Runs on the worker's thread once it has stopped polling: a last chance to save progress."""


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
    report_batch_item_failures: bool = False  # from infra/event_sources.json: Chalice cannot set it

    @classmethod
    def from_config(cls, config: SQSEventConfig, settings: MappingSettings | None = None) -> SqsSource:
        queue_name = config.queue or (config.queue_arn or "").rsplit(":", 1)[-1]
        return cls(
            config.name,
            queue_name,
            config.batch_size,
            float(config.maximum_batching_window_in_seconds),
            (settings or MappingSettings()).report_batch_item_failures,
        )


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
            log.info(
                "%s: polling %s (batch %d, %s %s)",
                self.name,
                self.queue_arn,
                self.source.batch_size,
                REPORT_BATCH_ITEM_FAILURES,
                "on" if self.source.report_batch_item_failures else "off",
            )

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
        verdict = lambda_verdict(invocation, message_ids, self.source.report_batch_item_failures)
        if verdict.whole_batch and not invocation.failed:
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


# --- Kinesis: leases (checkpoints), the on-failure destination, one poller per shard ---


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@dataclass(frozen=True)
class Lease:
    """One shard's progress for one function, as KCL keeps it in its lease table."""

    key: str
    checkpoint: str | None = None  # the last sequence number done with (processed or discarded)
    start_at: float | None = None  # epoch seconds at which LATEST was fixed, if the mapping starts at LATEST
    shard_end: bool = False  # a closed shard read and done with to its end
    stream_created: str = ""  # tells a checkpoint of a deleted and recreated stream of the same name


class CheckpointStore:
    """Leases in a DynamoDB table on the emulator itself: they vanish with its other state, as they must.

    A file would outlive a restarted (in-memory) moto and point past the end
    of the new, empty shards. Only one runner process at a time is assumed:
    there is no lease ownership, only checkpoints.
    """

    def __init__(self, dynamodb: Any, table: str, ready_timeout_s: float = 60.0) -> None:
        self.dynamodb = dynamodb
        self.table = table
        self.ready_timeout_s = ready_timeout_s
        self._ready = False
        self._lock = threading.Lock()

    def ensure_table(self) -> None:
        """Create the table if it is missing and wait until it is active; cheap once done."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            try:
                status = str(self.dynamodb.describe_table(TableName=self.table)["Table"]["TableStatus"])
            except ClientError as exc:
                if _error_code(exc) != "ResourceNotFoundException":
                    raise
                try:
                    self.dynamodb.create_table(
                        TableName=self.table,
                        AttributeDefinitions=[{"AttributeName": "lease_key", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "lease_key", "KeyType": "HASH"}],
                        BillingMode="PAY_PER_REQUEST",
                    )
                    log.info("created the checkpoint table %s", self.table)
                except ClientError as create_exc:
                    if _error_code(create_exc) != "ResourceInUseException":  # created meanwhile: fine
                        raise
                status = "CREATING"
            deadline = time.monotonic() + self.ready_timeout_s
            while status != "ACTIVE":  # moto: at once; AWS and LocalStack: a few seconds
                if time.monotonic() > deadline:
                    raise SourceUnavailable(f"checkpoint table {self.table} still {status}")
                time.sleep(0.2)
                status = str(self.dynamodb.describe_table(TableName=self.table)["Table"]["TableStatus"])
            self._ready = True

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.dynamodb, operation)(TableName=self.table, **kwargs)
        except ClientError as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                self._ready = False  # the emulator restarted under us: create the table again next time
            raise

    def load(self, key: str) -> Lease | None:
        item = self._call("get_item", Key={"lease_key": {"S": key}}, ConsistentRead=True).get("Item")
        if not item:
            return None
        return Lease(
            key,
            checkpoint=item["checkpoint"]["S"] if "checkpoint" in item else None,
            start_at=float(item["start_at"]["N"]) if "start_at" in item else None,
            shard_end=bool(item.get("shard_end", {}).get("BOOL", False)),
            stream_created=str(item.get("stream_created", {}).get("S", "")),
        )

    def save(self, lease: Lease) -> None:
        item: dict[str, Any] = {
            "lease_key": {"S": lease.key},
            "shard_end": {"BOOL": lease.shard_end},
            "stream_created": {"S": lease.stream_created},
            "updated_at": {"S": _iso_ms(time.time())},  # for people reading the table
        }
        if lease.checkpoint is not None:
            item["checkpoint"] = {"S": lease.checkpoint}
        if lease.start_at is not None:
            item["start_at"] = {"N": repr(lease.start_at)}
        self._call("put_item", Item=item)


class FailureDestination:
    """An on-failure destination: the SQS queue whose ARN a CloudFormation stack output holds.

    Resolved on first use, not at start-up, so the runner may start before
    the stack is provisioned; a missing stack or output blocks only the
    shard that needs it, with a logged reason, until it appears.
    """

    def __init__(self, output_name: str, stack_name: str, cloudformation: Any, sqs: Any) -> None:
        self.output_name = output_name
        self.stack_name = stack_name
        self.cloudformation = cloudformation
        self.sqs = sqs
        self._queue_url: str | None = None
        self._lock = threading.Lock()

    def queue_url(self) -> str:
        with self._lock:
            if self._queue_url is None:
                arn = self._output_value()
                if ":sqs:" not in arn:
                    raise SourceUnavailable(f"{self.output_name}={arn}: only SQS queue destinations are emulated")
                # The queue name is the ARN's last segment (arn:aws:sqs:<region>:<account>:<name>).
                queue_name = re.split(r"[:/]", arn)[-1]
                self._queue_url = str(self.sqs.get_queue_url(QueueName=queue_name)["QueueUrl"])
                log.info("on-failure destination %s: %s", self.output_name, self._queue_url)
            return self._queue_url

    def _output_value(self) -> str:
        try:
            stacks = self.cloudformation.describe_stacks(StackName=self.stack_name)["Stacks"]
        except ClientError as exc:
            raise SourceUnavailable(f"stack {self.stack_name} (for {self.output_name}): {exc}") from exc
        outputs = {str(o["OutputKey"]): str(o["OutputValue"]) for stack in stacks for o in stack.get("Outputs", [])}
        if self.output_name not in outputs:
            raise SourceUnavailable(
                f"stack {self.stack_name} has no output {self.output_name} (it has {', '.join(sorted(outputs))})"
            )
        return outputs[self.output_name]

    def send(self, message: Mapping[str, Any]) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url(), MessageBody=json.dumps(message))


@dataclass(frozen=True)
class KinesisSource:
    """A KinesisEventConfig (what `chalice package` deploys) plus the settings Chalice cannot express."""

    name: str
    stream_name: str
    batch_size: int
    starting_position: str
    window_s: float
    settings: MappingSettings = field(default_factory=MappingSettings)

    @classmethod
    def from_config(cls, config: KinesisEventConfig, settings: MappingSettings | None = None) -> KinesisSource:
        return cls(
            config.name,
            config.stream,
            config.batch_size,
            config.starting_position,
            float(config.maximum_batching_window_in_seconds),
            settings or MappingSettings(),
        )


@dataclass(frozen=True)
class StreamInfo:
    name: str
    arn: str
    created: str  # the stream's creation time: a recreated stream of the same name is a different stream


@dataclass
class StreamBatchReport:
    """One invocation for a shard: the records, how Lambda read the outcome, and what it does next."""

    function: str
    shard_id: str
    sequence_numbers: list[str]
    invocation: Invocation
    failure: StreamFailure | None
    plan: StreamPlan


class KinesisShardPoller(Worker):
    """One shard of a Kinesis event source mapping: read in order, invoke, checkpoint, retry or discard.

    Keeps what Lambda keeps per shard: the checkpoint (durable, in the lease
    table), the shard iterator, and the records read but not yet done with (a
    batch being retried, or the halves of a bisected one). Those are always
    consecutive and directly follow the checkpoint, so moving the checkpoint
    to the end of whatever the head of the work finished is always right.
    """

    def __init__(
        self,
        source: KinesisSource,
        function: LocalFunction,
        stream: StreamInfo,
        shard_id: str,
        kinesis: Any,
        checkpoints: CheckpointStore,
        region: str,
        options: RunnerOptions,
        *,
        parents: Sequence[str] = (),
        from_trim_horizon: bool = False,
        destination: FailureDestination | None = None,
    ) -> None:
        super().__init__(f"kinesis:{source.name}:{shard_id}", source.name, options.error_backoff_s)
        self.source = source
        self.function = function
        self.stream = stream
        self.shard_id = shard_id
        self.kinesis = kinesis
        self.checkpoints = checkpoints
        self.region = region
        self.options = options
        self.from_trim_horizon = from_trim_horizon
        self.destination = destination
        self.policy = source.settings.retry_policy()
        self.lease_key = self.lease_key_for(shard_id)
        self.position: str | None = None  # the checkpoint, possibly not saved yet
        self.iterator: str | None = None
        self.shard_ended = False
        self.work: list[Segment] = []
        self.notices: list[dict[str, Any]] = []  # destination records not sent yet
        self._saved_position: str | None = None
        self._start_at: float | None = None
        self._lease_loaded = False
        self._pending_parents = set(parents)
        self._told_waiting = False
        self._last_get = -math.inf

    def lease_key_for(self, shard_id: str) -> str:
        return f"{self.function.spec.function_name}:{self.stream.arn}:{shard_id}"

    def poll_once(self) -> StreamBatchReport | None:
        if not self._lease_loaded:
            self._load_lease()
            if self.finished:
                return None
        if self._pending_parents and not self._parents_done():
            # Lambda finishes a parent shard before its children, so order per partition key survives resharding.
            if not self._told_waiting:
                log.info("%s: waiting for parent shards %s", self.name, ", ".join(sorted(self._pending_parents)))
                self._told_waiting = True
            self.stopping.wait(self.options.kinesis_idle_wait_s)
            return None
        self.flush()
        if not self.work:
            if self.shard_ended:
                self._end_shard()
                return None
            records = self.collect_batch()
            if not records:
                return None
            self.work.append(Segment(tuple(records)))
        report = self.process_head()
        self.flush()
        return report

    def _load_lease(self) -> None:
        self.checkpoints.ensure_table()
        lease = self.checkpoints.load(self.lease_key)
        if lease is not None and lease.stream_created != self.stream.created:
            log.warning("%s: ignoring the checkpoint of an earlier stream named %s", self.name, self.stream.name)
            lease = None
        if lease is not None:
            self.position = self._saved_position = lease.checkpoint
            self._start_at = lease.start_at
            self.finished = lease.shard_end
        elif self.source.starting_position == "LATEST" and not self.from_trim_horizon:
            # Lambda fixes LATEST once, when the mapping is created: saving the
            # moment means a restart does not skip what arrived while it was down.
            self._start_at = time.time()
            self.checkpoints.save(self._lease())
        self._lease_loaded = True
        if self.finished:
            log.info("%s: shard already read to its end", self.name)
        else:
            log.info("%s: reading from %s", self.name, self._start_description())

    def _start_description(self) -> str:
        if self.position is not None:
            return f"after checkpoint {self.position}"
        if self._start_at is not None:
            return f"LATEST (fixed at {_iso_ms(self._start_at)})"
        return "TRIM_HORIZON"

    def _lease(self, shard_end: bool = False) -> Lease:
        return Lease(self.lease_key, self.position, self._start_at, shard_end, self.stream.created)

    def _parents_done(self) -> bool:
        for parent in sorted(self._pending_parents):
            lease = self.checkpoints.load(self.lease_key_for(parent))
            if lease is not None and lease.shard_end and lease.stream_created == self.stream.created:
                self._pending_parents.discard(parent)
        return not self._pending_parents

    def _acquire_iterator(self) -> str:
        kwargs: dict[str, Any] = {"StreamName": self.stream.name, "ShardId": self.shard_id}
        if self.position is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=self.position)
        elif self._start_at is not None:
            kwargs.update(
                ShardIteratorType="AT_TIMESTAMP",
                Timestamp=datetime.datetime.fromtimestamp(self._start_at, datetime.UTC),
            )
        else:
            kwargs.update(ShardIteratorType="TRIM_HORIZON")
        return str(self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"])

    def _get_records(self, limit: int) -> list[dict[str, Any]]:
        # At most 5 GetRecords a second per shard, Kinesis's limit, which Lambda respects too.
        pause = self._last_get + KINESIS_GET_RECORDS_INTERVAL_S - time.monotonic()
        if pause > 0 and self.stopping.wait(pause):
            return []
        if self.iterator is None:
            self.iterator = self._acquire_iterator()
        self._last_get = time.monotonic()
        try:
            response = self.kinesis.get_records(ShardIterator=self.iterator, Limit=limit)
        except _AWS_ERRORS:
            # Expired or invalid (moto answers HTTP 500): next time a fresh one from the checkpoint,
            # which is where this one stood too, since nothing is read while work is pending.
            self.iterator = None
            raise
        self.iterator = response.get("NextShardIterator")
        if self.iterator is None:
            self.shard_ended = True  # a closed shard, read to its end
        return list(response.get("Records", []))

    def collect_batch(self) -> list[dict[str, Any]]:
        """One GetRecords of up to batch_size; with a batching window, more until batch_size or the window ends."""
        batch_size = self.source.batch_size
        records = self._get_records(batch_size)
        if not records:
            if not self.shard_ended:
                self.stopping.wait(self.options.kinesis_idle_wait_s)
            return []
        deadline = time.monotonic() + self.source.window_s
        while (
            len(records) < batch_size
            and not self.shard_ended
            and not self.stopping.is_set()
            and time.monotonic() < deadline
        ):
            try:
                records += self._get_records(batch_size - len(records))
            except _AWS_ERRORS as exc:
                log.warning(
                    "%s: GetRecords failed inside the batching window, invoking with what is in hand: %s",
                    self.name,
                    exc,
                )
                break
        if self.stopping.is_set():
            # Read but never delivered, so not in flight: a restart reads them again from the checkpoint.
            self.iterator = None
            return []
        return records

    def process_head(self) -> StreamBatchReport | None:
        """Deliver the first segment of the work once, and apply Lambda's reading of the outcome."""
        segment: Segment | None = self.work[0]
        assert segment is not None
        segment, expired = expire_records(segment, time.time(), self.policy.maximum_record_age_s)
        if expired is not None:
            self._discard(expired)
            self._advance(str(expired.records[-1]["SequenceNumber"]))
            self.work[0:1] = [segment] if segment is not None else []
        if segment is None:
            return None
        pause = retry_backoff_s(segment.retries, self.options.retry_backoff_s, self.options.retry_backoff_max_s)
        if pause and self.stopping.wait(pause):
            return None
        sequence_numbers = segment.sequence_numbers
        event = kinesis_event(segment.records, self.shard_id, self.stream.arn, self.region, self.function.spec.role_arn)
        invocation = self.function.invoke(event)
        verdict = lambda_verdict(invocation, sequence_numbers, self.source.settings.report_batch_item_failures)
        failure = stream_failure(verdict, sequence_numbers, invocation.request_id)
        plan = plan_stream_retry(segment, failure, self.policy)
        self.work[0:1] = list(plan.next)
        if plan.discard is not None:
            self._discard(plan.discard)
        if plan.checkpoint is not None:
            self._advance(plan.checkpoint)
        log.info(
            "invoked %s shard=%s records=%d sequence=%s..%s %s duration_ms=%.0f request=%s",
            self.function.name,
            self.shard_id,
            len(sequence_numbers),
            sequence_numbers[0],
            sequence_numbers[-1],
            "ok" if failure is None else f"failed from {sequence_numbers[failure.first_failed]} ({failure.reason})",
            invocation.duration_ms,
            invocation.request_id,
        )
        return StreamBatchReport(self.function.name, self.shard_id, sequence_numbers, invocation, failure, plan)

    def _advance(self, sequence_number: str) -> None:
        # Numbers, not strings: "10" < "9" as text.
        if self.position is None or int(sequence_number) > int(self.position):
            self.position = sequence_number

    def _discard(self, discard: Discard) -> None:
        record = kinesis_failure_record(discard, self.shard_id, self.stream.arn, self.function.spec, time.time())
        info = record["KinesisBatchInfo"]
        count = info["batchSize"]
        where = f"{count} record{'s' * (count != 1)} {info['startSequenceNumber']}..{info['endSequenceNumber']}"
        if self.destination is None:
            log.error("%s: discarded %s (%s); no on-failure destination", self.name, where, discard.condition)
            return
        log.warning("%s: discarding %s (%s) to the on-failure destination", self.name, where, discard.condition)
        self.notices.append(record)

    def flush(self) -> None:
        """Send pending destination records, then save the checkpoint: never past records not yet reported."""
        while self.notices:
            assert self.destination is not None
            self.destination.send(self.notices[0])
            self.notices.pop(0)
        if self.position != self._saved_position:
            self.checkpoints.save(self._lease())
            self._saved_position = self.position

    def _end_shard(self) -> None:
        self.checkpoints.save(self._lease(shard_end=True))
        self.finished = True
        log.info("%s: shard closed and read to its end", self.name)

    def on_stop(self) -> None:
        # SIGTERM: the in-flight batch has finished; save its checkpoint, or a restart delivers it again.
        for attempt in range(3):
            try:
                self.flush()
                return
            except _RETRYABLE as exc:
                log.warning("%s: saving progress on stop failed (attempt %d): %s", self.name, attempt + 1, exc)
                time.sleep(0.5)
        log.error(
            "%s: progress after %s not saved: those records will be delivered again", self.name, self._saved_position
        )


class KinesisStreamWorker(Worker):
    """A Kinesis event source mapping: lists the stream's shards now and then, and runs a poller per shard.

    Shards that appear later (resharding) are picked up at the next listing;
    a shard with listed parents waits until they are read to their end.
    """

    def __init__(
        self,
        source: KinesisSource,
        function: LocalFunction,
        region: str,
        options: RunnerOptions,
        new_client: Callable[[str], Any],
        checkpoints: CheckpointStore,
        destination: FailureDestination | None = None,
    ) -> None:
        super().__init__(f"kinesis:{source.name}", source.name, options.error_backoff_s)
        self.source = source
        self.function = function
        self.region = region
        self.options = options
        self.new_client = new_client
        self.kinesis = new_client("kinesis")
        self.checkpoints = checkpoints
        self.destination = destination
        self.stream: StreamInfo | None = None
        self.pollers: dict[str, KinesisShardPoller] = {}
        self._retired: list[KinesisShardPoller] = []
        self._lock = threading.Lock()
        self._listed = False

    def poll_once(self) -> list[str]:
        summary = self.kinesis.describe_stream_summary(StreamName=self.source.stream_name)["StreamDescriptionSummary"]
        created = summary.get("StreamCreationTimestamp")
        stream = StreamInfo(
            self.source.stream_name, str(summary["StreamARN"]), repr(_epoch_s(created)) if created else ""
        )
        started: list[str] = []
        if summary.get("StreamStatus") in ("ACTIVE", "UPDATING"):
            if self.stream is not None and stream != self.stream:
                log.warning("%s: stream %s was recreated; starting over on its shards", self.name, stream.name)
                self._retire_pollers()
            self.stream = stream
            self.checkpoints.ensure_table()
            started = self._start_pollers(stream, self._list_shards())
        self.stopping.wait(self.options.shard_refresh_s)
        return started

    def _list_shards(self) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamName": self.source.stream_name}
        while True:
            page = self.kinesis.list_shards(**kwargs)
            shards += page.get("Shards", [])
            token = page.get("NextToken")
            if not token:
                return shards
            kwargs = {"NextToken": token}  # ListShards refuses the stream name alongside a token

    def _start_pollers(self, stream: StreamInfo, shards: Sequence[Mapping[str, Any]]) -> list[str]:
        listed = {str(shard["ShardId"]) for shard in shards}
        started: list[str] = []
        with self._lock:
            for shard in shards:
                shard_id = str(shard["ShardId"])
                if shard_id in self.pollers or self.stopping.is_set():
                    continue
                parents = [p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p in listed]
                poller = KinesisShardPoller(
                    self.source,
                    self.function,
                    stream,
                    shard_id,
                    self.new_client("kinesis"),
                    self.checkpoints,
                    self.region,
                    self.options,
                    parents=[str(p) for p in parents],
                    # A shard born after the mapping started holds only records newer than its LATEST.
                    from_trim_horizon=self._listed or bool(parents),
                    destination=self.destination,
                )
                self.pollers[shard_id] = poller
                poller.start()
                started.append(shard_id)
        self._listed = True
        if started:
            log.info("%s: polling %s shards %s", self.name, stream.arn, ", ".join(started))
        return started

    def _retire_pollers(self) -> None:
        with self._lock:
            for poller in self.pollers.values():
                poller.request_stop()
            self._retired += self.pollers.values()
            self.pollers = {}
            self._listed = False

    def _children(self) -> list[KinesisShardPoller]:
        with self._lock:
            return [*self.pollers.values(), *self._retired]

    def request_stop(self) -> None:
        super().request_stop()  # first, so that no poller starts after the list below is taken
        for poller in self._children():
            poller.request_stop()

    def join(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        done = super().join(timeout_s)
        for poller in self._children():
            done = poller.join(deadline - time.monotonic()) and done
        return done


# --- The runner: builds workers from app.event_sources ---


@dataclass(frozen=True)
class RunnerOptions:
    sqs_concurrency: int = 1
    schedule_interval_s: float | None = None
    function_timeout_s: float = DEFAULT_TIMEOUT_S
    stage: str = "dev"  # Chalice's default stage, so names match `chalice local` / `chalice deploy`
    poll_wait_s: int = 1  # long-poll seconds: short, so that shutdown is prompt
    error_backoff_s: float = 1.0
    kinesis_idle_wait_s: float = 1.0  # Lambda polls a shard with nothing new about once a second
    shard_refresh_s: float = 5.0  # between ListShards calls that look for new shards
    retry_backoff_s: float = 0.5  # first pause before retrying a failed stream batch; doubles per retry
    retry_backoff_max_s: float = 5.0
    checkpoint_table: str = DEFAULT_CHECKPOINT_TABLE
    stack_name: str = DEFAULT_STACK_NAME  # whose Outputs on_failure_destination_output names


class Runner:
    """Runs a Chalice app's SQS, Kinesis and schedule handlers the way Lambda's event sources would."""

    def __init__(
        self,
        app: Chalice,
        options: RunnerOptions | None = None,
        sqs_client: Any = None,
        region: str | None = None,
        event_sources: Mapping[str, MappingSettings] | None = None,
        clients: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.options = options or RunnerOptions()
        # Injected clients (tests use fakes) are shared; otherwise each worker gets its own.
        self._clients = dict(clients or {})
        if sqs_client is not None:
            self._clients["sqs"] = sqs_client
        self.region = region or _region_of(next(iter(self._clients.values()), None))
        self.event_sources = dict(event_sources or {})
        self._workers: list[Worker] | None = None
        self._checkpoints: CheckpointStore | None = None

    def _client(self, service: str) -> Any:
        injected = self._clients.get(service)
        if injected is not None:
            return injected
        # A client per worker, created here on the calling thread: boto3's
        # default session is not thread-safe, its clients are.
        return boto3.session.Session().client(
            service,
            region_name=self.region,
            config=Config(
                connect_timeout=2,
                read_timeout=self.options.poll_wait_s + 10,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def _new_sqs_client(self) -> Any:
        return self._client("sqs")

    @property
    def checkpoints(self) -> CheckpointStore:
        if self._checkpoints is None:
            self._checkpoints = CheckpointStore(self._client("dynamodb"), self.options.checkpoint_table)
        return self._checkpoints

    def function(self, name: str) -> LocalFunction:
        spec = FunctionSpec(
            function_name=f"{self.app.app_name}-{self.options.stage}-{name}",
            timeout_s=self.options.function_timeout_s,
            region=self.region,
            role_name=f"{self.app.app_name}-{self.options.stage}",  # Chalice's default shared role
        )
        return LocalFunction(name, self.app.handler_map[name], spec)

    def _workers_for(self, source: BaseEventSourceConfig) -> list[Worker]:
        opts = self.options
        settings = self.event_sources.get(source.name)
        if isinstance(source, SQSEventConfig):
            if settings is not None and settings.stream_only_settings:
                raise EventSourcesError(
                    f"{source.name}: {', '.join(settings.stream_only_settings)} apply to stream sources only; "
                    "Lambda refuses them on an SQS event source mapping"
                )
            sqs_source = SqsSource.from_config(source, settings)
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
        if isinstance(source, KinesisEventConfig):
            kinesis_source = KinesisSource.from_config(source, settings)
            destination = None
            if kinesis_source.settings.on_failure_destination_output:
                destination = FailureDestination(
                    kinesis_source.settings.on_failure_destination_output,
                    opts.stack_name,
                    self._client("cloudformation"),
                    self._client("sqs"),
                )
            return [
                KinesisStreamWorker(
                    kinesis_source,
                    self.function(source.name),
                    self.region,
                    opts,
                    self._client,
                    self.checkpoints,
                    destination,
                )
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
        """The workers of every event source; raises EventSourcesError for settings Lambda would refuse."""
        if self._workers is None:
            handlers = {source.name for source in self.app.event_sources}
            for name in sorted(set(self.event_sources) - handlers):
                log.warning("event source settings for %s, which is no event handler of this app", name)
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
    parser.add_argument(
        "--event-sources",
        type=Path,
        default=DEFAULT_EVENT_SOURCES_PATH,
        metavar="PATH",
        help="event source mapping settings Chalice cannot express, by handler name (default infra/event_sources.json)",
    )
    parser.add_argument(
        "--stack-name",
        default=os.environ.get("RESOURCE_PREFIX", DEFAULT_STACK_NAME),
        help="CloudFormation stack whose outputs name on-failure destinations (default $RESOURCE_PREFIX or "
        f"{DEFAULT_STACK_NAME})",
    )
    parser.add_argument(
        "--checkpoint-table",
        default=DEFAULT_CHECKPOINT_TABLE,
        help="DynamoDB table on the emulator holding Kinesis checkpoints, created if missing "
        f"(default {DEFAULT_CHECKPOINT_TABLE})",
    )
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
    try:
        runner = Runner(
            app,
            RunnerOptions(
                sqs_concurrency=args.sqs_concurrency,
                schedule_interval_s=args.schedule_interval,
                function_timeout_s=args.function_timeout,
                stage=args.stage,
                checkpoint_table=args.checkpoint_table,
                stack_name=args.stack_name,
            ),
            event_sources=load_event_sources(args.event_sources),
        )
        runner.workers  # noqa: B018 - builds them now, so invalid settings fail at start-up
    except EventSourcesError as exc:
        log.error("invalid event source settings: %s", exc)
        return 2
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
