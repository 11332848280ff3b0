"""Stream retries: what Lambda does after each invocation of a shard's batch (pure functions, no clock, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from devstack.runner.events import epoch_seconds
from devstack.runner.verdicts import BatchVerdict

UNHANDLED = "Unhandled"  # Lambda's functionError for an exception, a timeout or an unserializable response
RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"


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
        if now_s - epoch_seconds(record["ApproximateArrivalTimestamp"]) <= maximum_record_age_s:
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
