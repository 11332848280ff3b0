"""SQS-triggered worker of the orders queue: one placement attempt or exchange cancel request per message, batch
items failing independently."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.adapters.queue import OrderAction, OrderMessage, QueueUnavailable, parse_order_message
from chalicelib.config import get_settings
from chalicelib.observability import LoggingThreadPool, count, lambda_handler, logger, seconds
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.exchange_cancel import CancelRequestOutcome, request_exchange_cancel
from chalicelib.service.placement import PlacementOutcome, PlacementResult, place_order


class MessageDeferred(Exception):
    """Reported as a batch item failure: the message (a placement or a cancel request) comes back after a delay."""


class PlacementExhausted(Exception):
    """Reported as a batch item failure after the order was marked failed and the DLQ could not take its message."""


class MalformedOrderMessage(Exception):
    """Not ours to fix here: left to the redrive policy, so it ends in the DLQ for a human."""


@functools.cache
def _executor() -> LoggingThreadPool:
    # The exchange answers in ~0.5 s; a batch's orders wait for it together,
    # not one after another. One thread per record a batch can hold.
    return LoggingThreadPool(max_workers=get_settings().placement_batch_size, thread_name_prefix="place")


def handle_record(record: SQSRecord, dependencies: Dependencies) -> str:
    try:
        message = parse_order_message(record.body)
    except ValueError as exc:
        logger.error("malformed orders queue message", message_id=record.message_id, error=str(exc))
        raise MalformedOrderMessage(str(exc)) from exc
    order_id = message.order_id
    # Worker threads: the keys must not leak into another record's lines.
    logger.thread_safe_append_keys(order_id=order_id, correlation_id=message.correlation_id)
    try:
        if message.action is OrderAction.CANCEL:
            return _request_cancel(record, order_id, dependencies)
        return _place(record, message, dependencies)
    finally:
        logger.thread_safe_clear_keys()


def _place(record: SQSRecord, message: OrderMessage, dependencies: Dependencies) -> str:
    order_id = message.order_id
    count("PlacementAttempts")
    result = place_order(order_id, int(record.attributes.approximate_receive_count), dependencies)
    logger.info("placement attempt", outcome=result.outcome.value, retry_in_s=result.retry_in_s)
    _record_outcome(result)
    queue = dependencies.orders_queue
    if result.outcome is PlacementOutcome.RETRY:
        queue.retry_after(record.receipt_handle, result.retry_in_s)
        raise MessageDeferred(f"order {order_id}: retry in {result.retry_in_s}s")
    if result.outcome is PlacementOutcome.AWAITING_VERDICT:
        # A new message, not this one back: this one may be on its last
        # receive, and the queue would hand it to the DLQ. If the send fails,
        # the message comes back (or the sweep re-sends): asking twice is harmless.
        queue.request_placement(order_id, message.correlation_id, delay_s=result.retry_in_s)
        return result.outcome.value
    if result.outcome is PlacementOutcome.FAILED:
        _dead_letter(record, order_id, dependencies)
    return result.outcome.value


def _dead_letter(record: SQSRecord, order_id: str, dependencies: Dependencies) -> None:
    """Hand a failed order's message to the DLQ ourselves: its verdict may come on a message not at its last receive."""
    try:
        dependencies.orders_dead_letter_queue.send(record.body)
    except QueueUnavailable:
        # Visible again at once: on its last receive the redrive policy moves
        # it; otherwise the order is failed and only the DLQ's copy is missing.
        dependencies.orders_queue.retry_after(record.receipt_handle, 0)
        raise PlacementExhausted(f"order {order_id}: attempts exhausted, the DLQ unreachable") from None


def _request_cancel(record: SQSRecord, order_id: str, dependencies: Dependencies) -> str:
    result = request_exchange_cancel(order_id, int(record.attributes.approximate_receive_count), dependencies)
    logger.info("cancel request", outcome=result.outcome.value, retry_in_s=result.retry_in_s)
    if result.outcome is CancelRequestOutcome.CANCELED_UNPLACED:
        count("OrdersCanceledUnplaced")
    if result.outcome in (CancelRequestOutcome.RETRY, CancelRequestOutcome.WAIT):
        dependencies.orders_queue.retry_after(record.receipt_handle, result.retry_in_s)
        raise MessageDeferred(f"order {order_id}: cancel request again in {result.retry_in_s}s")
    return result.outcome.value


def _record_outcome(result: PlacementResult) -> None:
    if result.corrected:
        count("OrdersCorrected")
    if result.outcome is PlacementOutcome.PLACED:
        count("OrdersPlaced")
        order = result.order
        if order is not None and order.placed_at is not None:
            seconds("CreationToPlacement", (order.placed_at - order.created_at).total_seconds())
    elif result.outcome in (PlacementOutcome.FAILED, PlacementOutcome.REJECTED):
        count("OrdersFailed")
        if result.outcome is PlacementOutcome.FAILED:
            count("OrdersDeadLettered")


@lambda_handler
def handle_batch(event: dict[str, Any], context: Any, *, dependencies: Dependencies) -> dict[str, Any]:
    """Lambda SQS event in, partial batch response out (needs ReportBatchItemFailures on the mapping)."""

    async def handle(record: SQSRecord) -> str:  # Powertools passes it by this name
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_executor(), handle_record, record, dependencies)

    # A batch whose every order is retrying is a normal outcome, not a
    # function error: report the items, don't raise (which would count as a
    # Lambda error and an X-Ray fault).
    processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(
        async_process_partial_response(event=event, record_handler=handle, processor=processor, context=context)
    )
