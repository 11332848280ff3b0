"""Read-only views for operators: an order with its history, queue depths, dead-letter contents."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from chalicelib import bootstrap
from chalicelib.domain.model import ExecutionReport, Order, OrderStatus
from ops.aws import Aws, Message, peek, queue_depth, stream_shards
from ops.messages import FailedBatch, ParkedReport, parse_failed_execution, placement_order_id
from ops.target import Target

# How many dead letters `order` looks through for the one order; a DLQ this
# full needs `dlq` and a redrive anyway.
ORDER_DLQ_SCAN = 500
# Longer text (an exchange's error page, say) is cut in the human output; --json has all of it.
MAX_SHOWN = 1000


def printable(text: str) -> str:
    """Text from the exchange, the feed or a client as a terminal may show it (as the API's _shown_name does).

    Printable ASCII as it is; anything else (escape sequences that would
    drive the operator's terminal, bidirectional controls that reorder the
    line, other non-ASCII) escaped as in JSON, and cut at MAX_SHOWN.
    """
    if len(text) <= MAX_SHOWN and text.isascii() and text.isprintable():
        return text
    shown = json.dumps(text[:MAX_SHOWN])[1:-1]
    return shown + ("..." if len(text) > MAX_SHOWN else "")


def printable_view(value: Any) -> Any:
    """The view with every string in it made printable (keys too: a dead letter's body may be anything)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_view(key): printable_view(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [printable_view(item) for item in value]
    return value


def iso(moment: datetime | None) -> str | None:
    """UTC, milliseconds and a Z, as the API writes times."""
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)  # decimal strings: exact, as the feed carries them


def order_fields(order: Order) -> dict[str, Any]:
    terms = order.terms
    return {
        "id": order.id,
        "status": order.status.value,
        "type": terms.type.value,
        "side": terms.side.value,
        "instrument": terms.instrument,
        "quantity": terms.quantity,
        "limit_price": _text(terms.limit_price),
        "stop_price": _text(terms.stop_price),
        "time_in_force": terms.time_in_force.value,
        "expires_at": iso(terms.expires_at),
        "client_order_id": terms.client_order_id,
        "account_id": order.account_id,
        "placing_until": iso(order.placing_until),
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "attempts": order.attempts,
        "last_error": order.last_error,
        "failure_reason": order.failure_reason,
        "placed_at": iso(order.placed_at),
        "exchange_order_id": order.exchange_order_id,
        "filled_quantity": order.filled_quantity,
        "average_fill_price": _text(order.average_fill_price),
        "correlation_id": order.correlation_id,
        "cancel_queued_at": iso(order.cancel_queued_at),
        "cancel_sent_at": iso(order.cancel_sent_at),
        "reopenings": [{"at": iso(r.at), "by": r.by, "earlier_failure": r.earlier_failure} for r in order.reopenings],
        "version": order.version,
    }


def execution_fields(report: ExecutionReport) -> dict[str, Any]:
    return {
        "exec_id": report.exec_id,
        "type": report.exec_type.value,
        "time": iso(report.transact_time),
        "last_qty": report.last_qty,
        "last_price": _text(report.last_price),
        "cum_qty": report.cum_qty,
        "leaves_qty": report.leaves_qty,
        "avg_price": _text(report.avg_price),
        "seq": report.seq,
        "exchange_order_id": report.exchange_order_id,
    }


def history(order: Order, executions: list[ExecutionReport]) -> list[dict[str, Any]]:
    """The events that the stored order and its executions still show, oldest first.

    The order keeps only its latest state, so this is a reconstruction: the
    time of an earlier failed attempt, for instance, is not stored anywhere,
    only the number of attempts and the last error.
    """
    events: list[tuple[datetime, str, str | None]] = [(order.created_at, "created", None)]
    for reopening in order.reopenings:
        events.append((reopening.at, "reopened", f"by {reopening.by}; it had failed: {reopening.earlier_failure}"))
    if order.status is OrderStatus.PENDING and order.attempts:
        # Only a failed attempt writes a pending order (the sweep rewrites it unchanged).
        events.append((order.updated_at, "attempt_failed", f"attempt {order.attempts}: {order.last_error}"))
    elif order.status is OrderStatus.PENDING and order.last_error and not order.reopenings:
        # Pending with no attempts but an error: only a redrive does that (one from before reopenings were recorded).
        events.append((order.updated_at, "reopened", f"by an operator; earlier error: {order.last_error}"))
    if order.status is OrderStatus.FAILED:
        events.append((order.updated_at, "failed", f"attempt {order.attempts}: {order.failure_reason}"))
    if order.placed_at is not None:
        earlier = f"; an earlier attempt failed: {order.last_error}" if order.last_error else ""
        detail = f"exchange order id {order.exchange_order_id}, attempt {order.attempts}{earlier}"
        events.append((order.placed_at, "placed", detail))
    for report in executions:
        price = f" @ {report.last_price}" if report.last_price is not None else ""
        detail = f"{report.last_qty}{price}, cum {report.cum_qty}, leaves {report.leaves_qty} ({report.exec_id})"
        events.append((report.transact_time, report.exec_type.value, detail))
    events.sort(key=lambda event: event[0])  # stable: same-time events keep the order above
    return [{"at": iso(at), "event": name, "detail": detail} for at, name, detail in events]


def dead_letter_fields(message: Message) -> dict[str, Any]:
    order_id = placement_order_id(message)
    fields: dict[str, Any] = {
        "message_id": message.message_id,
        "order_id": order_id,
        "receive_count": message.receive_count,
        "sent_at": iso(message.sent_at),
    }
    if order_id is None:
        fields["body"] = message.body  # not a placement message: show what it is
    return fields


def failed_execution_fields(message: Message) -> dict[str, Any]:
    parsed = parse_failed_execution(message)
    fields: dict[str, Any] = {
        "message_id": message.message_id,
        "receive_count": message.receive_count,
        "sent_at": iso(message.sent_at),
    }
    if isinstance(parsed, FailedBatch):
        reason = " ".join(part for part in (parsed.condition, parsed.function_error) if part)
        fields.update(
            kind="batch",
            reason=reason or None,
            order_id=None,  # known only after reading the records from the stream
            shard_id=parsed.shard_id,
            start_sequence_number=parsed.start,
            end_sequence_number=parsed.end,
            batch_size=parsed.batch_size,
        )
    elif isinstance(parsed, ParkedReport):
        fields.update(
            kind="report",
            reason=parsed.reason,
            order_id=parsed.partition_key,
            sequence_number=parsed.sequence_number,
        )
    else:
        fields.update(kind="unknown", reason=None, order_id=None, body=message.body)
    return fields


def order_view(order_id: str, target: Target, aws: Aws) -> dict[str, Any] | None:
    """The order as stored, its executions and history, and what the dead-letter queues hold for it."""
    order = bootstrap.order_repository().get(order_id)
    if order is None:
        return None
    executions = bootstrap.execution_repository().list_for_order(order_id)
    dead, dlq_more = peek(aws, aws.queue_url(target.orders_dlq), ORDER_DLQ_SCAN)
    parked, parked_more = peek(aws, aws.queue_url(target.executions_failed_queue), ORDER_DLQ_SCAN)
    return {
        "target": target.describe(),
        "order": order_fields(order),
        "executions": [execution_fields(report) for report in executions],
        "history": history(order, executions),
        "dead_letters": [dead_letter_fields(m) for m in dead if placement_order_id(m) == order_id],
        "failed_executions": [
            fields for fields in map(failed_execution_fields, parked) if fields.get("order_id") == order_id
        ],
        # The scans stop after ORDER_DLQ_SCAN messages; the rest were not looked at.
        "dead_letters_scan_incomplete": dlq_more or parked_more,
    }


def queues_view(target: Target, aws: Aws) -> dict[str, Any]:
    return {
        "target": target.describe(),
        "queues": {
            "orders": queue_depth(aws, target.orders_queue),
            "orders_dlq": queue_depth(aws, target.orders_dlq),
            "executions_failed": queue_depth(aws, target.executions_failed_queue),
        },
        "stream": stream_shards(aws, target.executions_stream),
    }


def dlq_view(target: Target, aws: Aws, limit: int) -> dict[str, Any]:
    dead, dlq_more = peek(aws, aws.queue_url(target.orders_dlq), limit)
    parked, parked_more = peek(aws, aws.queue_url(target.executions_failed_queue), limit)
    return {
        "target": target.describe(),
        "orders_dlq": {
            "name": target.orders_dlq,
            "messages": [dead_letter_fields(m) for m in dead],
            "more": dlq_more,
        },
        "executions_failed": {
            "name": target.executions_failed_queue,
            "messages": [failed_execution_fields(m) for m in parked],
            "more": parked_more,
        },
    }
