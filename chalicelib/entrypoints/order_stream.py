"""DynamoDB Streams consumer of the orders table: each stored order change becomes its events in the account's log.

The stream gives an order's changes in the order they were written (one
shard per key range). The records of one batch are processed in that order.
A record that no retry can process (not readable, or its events cannot be
derived or rendered) is a poison record: counted, sent with its reason to the
order events failed queue and reported done, so it never blocks its shard.
When storage fails (StorageUnavailable), that record and every record after
it are reported as batch item failures, so that a retry never logs a later
change of an order before an earlier one; the mapping retries them until
they are a day old (infra/event_sources.json: no retry limit), since a
record handed to the on-failure queue is only a pointer into a stream that
keeps it 24 h, and its events would never be logged. Logging is idempotent
(change keys), so the records retried that were logged already log nothing
again. The events of the whole batch are pushed once, after all are logged.
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib.adapters.orders_table import OrderRecord, order_from_stream_image
from chalicelib.domain.order_events import OrderChange
from chalicelib.entrypoints.event_models import event_body
from chalicelib.observability import count, lambda_handler, logger
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.order_events import record_changes

# Only the attribute definitions of the record class are used to read an image: the unbound one will do.
_IMAGE_RECORD = OrderRecord


def order_change_of(record: dict[str, Any]) -> OrderChange | None:
    """The change a stream record holds; None for a deleted order (no event). ValueError if it is not readable."""
    name = record.get("eventName")
    images = record.get("dynamodb") or {}
    if name == "REMOVE":
        return None
    if name not in ("INSERT", "MODIFY") or "NewImage" not in images:
        raise ValueError(f"not an order change: eventName {name!r}, images {sorted(images)}")
    after = order_from_stream_image(_IMAGE_RECORD, images["NewImage"])
    if name == "INSERT":
        return OrderChange(before=None, after=after)
    if "OldImage" not in images:
        raise ValueError("a MODIFY record without its OldImage (the stream must carry new and old images)")
    return OrderChange(before=order_from_stream_image(_IMAGE_RECORD, images["OldImage"]), after=after)


def _sequence_number(record: dict[str, Any]) -> str:
    return str((record.get("dynamodb") or {}).get("SequenceNumber"))


def _failed_record(record: dict[str, Any], reason: str) -> str:
    """The failed queue's message for a poison record: why, and where it is (the orders are in the orders table)."""
    images = record.get("dynamodb") or {}
    return json.dumps(
        {
            "reason": reason,
            "eventSourceARN": record.get("eventSourceARN"),
            "eventID": record.get("eventID"),
            "eventName": record.get("eventName"),
            "sequenceNumber": images.get("SequenceNumber"),
            "keys": images.get("Keys"),
        },
        default=str,
    )


def _read_changes(records: list[dict[str, Any]]) -> tuple[list[tuple[int, OrderChange]], dict[int, str]]:
    """The records' changes (with their record's index), and the records that are no change of an order: why."""
    changes: list[tuple[int, OrderChange]] = []
    unreadable: dict[int, str] = {}
    for index, record in enumerate(records):
        try:
            change = order_change_of(record)
        except Exception as exc:  # ValueError, KeyError, a model's ValidationError...: no retry reads it
            unreadable[index] = f"unreadable record: {type(exc).__name__}: {exc}"
            continue
        if change is not None:
            changes.append((index, change))
    return changes, unreadable


@lambda_handler
def handle_batch(event: dict[str, Any], context: Any, *, dependencies: Dependencies) -> dict[str, Any]:
    """Lambda DynamoDB Streams event in, partial batch response out (the first failed record and all after it)."""
    records: list[dict[str, Any]] = event.get("Records", [])
    changes, poison = _read_changes(records)
    result = record_changes([change for _, change in changes], dependencies, event_body)
    for change_index, reason in result.unrecordable.items():
        poison[changes[change_index][0]] = f"events cannot be derived: {reason}"
    first_failed = None if result.failed_from is None else changes[result.failed_from][0]
    set_aside = 0
    # Only those before the first failure: the ones after it come back, and would be sent twice.
    for index in sorted(poison):
        if first_failed is not None and index >= first_failed:
            break
        record = records[index]
        logger.error("poison order stream record", sequence_number=_sequence_number(record), reason=poison[index])
        try:
            dependencies.order_events_failed_queue.send(_failed_record(record, poison[index]))
        except Exception:  # QueueUnavailable: it and every later record come back, to be set aside then
            logger.warning("poison record not set aside", sequence_number=_sequence_number(record), exc_info=True)
            first_failed = index
            break
        set_aside += 1
    if set_aside:
        count("OrderStreamRecordsUnreadable", set_aside)
    # Events logged by this batch, those an earlier try of it logged already included: the log's
    # append returns both alike.
    count("OrderEventsLogged", len(result.logged))
    failed = [] if first_failed is None else records[first_failed:]
    logger.info(
        "order changes processed",
        records=len(records),
        events_logged=len(result.logged),
        records_set_aside=set_aside,
        records_failed=len(failed),
    )
    return {"batchItemFailures": [{"itemIdentifier": _sequence_number(record)} for record in failed]}
