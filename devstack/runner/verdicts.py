"""Batch verdicts: which items of a batch Lambda treats as failed, given how the handler's invocation ended."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devstack.runner.invocation import Invocation

# One logger for the whole runner, as before it was a package: log filters and lines stay the same.
log = logging.getLogger("devstack.runner")

REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"


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
