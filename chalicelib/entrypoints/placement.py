"""SQS-triggered placement and cancel requests: one attempt per message, batch items failing independently."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib import bootstrap
from chalicelib.adapters.queue import OrderAction, parse_placement_message
from chalicelib.config import get_settings
from chalicelib.observability import count, lambda_handler, logger, seconds
from chalicelib.service import orders
from chalicelib.service.orders import CancelRequestOutcome, PlacementOutcome


class PlacementDeferred(Exception):
    """Reported as a batch item failure: the message comes back after its backoff."""


class PlacementExhausted(Exception):
    """Reported as a batch item failure after the order was marked failed: the redrive policy moves it to the DLQ."""


class MalformedPlacementMessage(Exception):
    """Not ours to fix here: left to the redrive policy, so it ends in the DLQ for a human."""


@functools.cache
def _executor() -> ThreadPoolExecutor:
    # The exchange answers in ~0.5 s; a batch's orders wait for it together,
    # not one after another. One thread per record a batch can hold.
    return ThreadPoolExecutor(max_workers=get_settings().placement_batch_size, thread_name_prefix="place")


def place_record(record: SQSRecord) -> str:
    try:
        request = parse_placement_message(record.body)
    except ValueError as exc:
        logger.error("malformed placement message", message_id=record.message_id, error=str(exc))
        raise MalformedPlacementMessage(str(exc)) from exc
    order_id = request.order_id
    # Worker threads: the keys must not leak into another record's lines.
    logger.thread_safe_append_keys(order_id=order_id, correlation_id=request.correlation_id)
    try:
        if request.action is OrderAction.CANCEL:
            return _request_cancel(record, order_id)
        return _place(record, order_id)
    finally:
        logger.thread_safe_clear_keys()


def _place(record: SQSRecord, order_id: str) -> str:
    count("PlacementAttempts")
    result = orders.place_order(
        order_id,
        receive_count=int(record.attributes.approximate_receive_count),
        repository=bootstrap.order_repository(),
        exchange=bootstrap.exchange(),
        policy=bootstrap.retry_policy(),
        stuck_after=bootstrap.stuck_after(),
        placement_lease=bootstrap.placement_lease(),
    )
    logger.info("placement attempt", outcome=result.outcome.value, retry_in_s=result.retry_in_s)
    _record_outcome(result)
    queue = bootstrap.placement_queue()
    if result.outcome is PlacementOutcome.RETRY:
        queue.retry_after(record.receipt_handle, result.retry_in_s)
        raise PlacementDeferred(f"order {order_id}: retry in {result.retry_in_s}s")
    if result.outcome is PlacementOutcome.FAILED:
        # Visible again at once, so that the next receive hands it to the DLQ.
        queue.retry_after(record.receipt_handle, 0)
        raise PlacementExhausted(f"order {order_id}: attempts exhausted")
    return result.outcome.value


def _request_cancel(record: SQSRecord, order_id: str) -> str:
    result = orders.request_exchange_cancel(
        order_id,
        receive_count=int(record.attributes.approximate_receive_count),
        repository=bootstrap.order_repository(),
        exchange=bootstrap.exchange(),
        policy=bootstrap.retry_policy(),
        stuck_after=bootstrap.stuck_after(),
    )
    logger.info("cancel request", outcome=result.outcome.value, retry_in_s=result.retry_in_s)
    if result.outcome is CancelRequestOutcome.CANCELED_UNPLACED:
        count("OrdersCanceledUnplaced")
    if result.outcome in (CancelRequestOutcome.RETRY, CancelRequestOutcome.WAIT):
        bootstrap.placement_queue().retry_after(record.receipt_handle, result.retry_in_s)
        raise PlacementDeferred(f"order {order_id}: cancel request again in {result.retry_in_s}s")
    return result.outcome.value


def _record_outcome(result: orders.PlacementResult) -> None:
    if result.outcome is PlacementOutcome.PLACED:
        count("OrdersPlaced")
        order = result.order
        if order is not None and order.placed_at is not None:
            seconds("CreationToPlacement", (order.placed_at - order.created_at).total_seconds())
    elif result.outcome in (PlacementOutcome.FAILED, PlacementOutcome.REJECTED):
        count("OrdersFailed")
        if result.outcome is PlacementOutcome.FAILED:
            count("OrdersDeadLettered")


async def _place_record_async(record: SQSRecord) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), place_record, record)


@lambda_handler
def handle_batch(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda SQS event in, partial batch response out (needs ReportBatchItemFailures on the mapping)."""
    # A batch whose every order is retrying is a normal outcome, not a
    # function error: report the items, don't raise (which would count as a
    # Lambda error and an X-Ray fault).
    processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(
        async_process_partial_response(
            event=event, record_handler=_place_record_async, processor=processor, context=context
        )
    )


@lambda_handler
def sweep(event: dict[str, Any], context: Any) -> int:
    """Scheduled: re-enqueue orders left pending past their sweep time."""
    settings = get_settings()
    resent = orders.sweep_pending(
        repository=bootstrap.order_repository(),
        queue=bootstrap.placement_queue(),
        stuck_after=bootstrap.stuck_after(),
        limit=settings.pending_sweep_batch,
    )
    count("OrdersReenqueued", resent)
    return resent
