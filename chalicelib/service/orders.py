"""Use cases of orders: create, read, place, and re-enqueue the stuck ones."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from chalicelib.adapters.exchange import Exchange, ExchangeRejected, ExchangeUnavailable
from chalicelib.adapters.queue import PlacementQueue, QueueUnavailable
from chalicelib.adapters.repository import (
    ConcurrentModification,
    OrderAlreadyExists,
    OrderRepository,
    StorageUnavailable,
)
from chalicelib.domain.model import (
    IdempotencyConflict,
    InvalidTransition,
    Order,
    OrderNotFound,
    OrderStatus,
    OrderTerms,
)
from chalicelib.domain.retry import RetryPolicy

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CreatedOrder:
    order: Order
    created: bool  # False: an earlier request with the same client order id created it


def create_order(
    terms: OrderTerms,
    repository: OrderRepository,
    queue: PlacementQueue,
    sweep_after: timedelta,
    clock: Clock = utc_now,
    correlation_id: str | None = None,
) -> CreatedOrder:
    """Store the order, then ask for its placement.

    The conditional write is the commit point. Timeline of the guarantee:
      t0  write succeeds  -> the order exists, pending, with sweep_after = t0 + sweep_after
      t1  SQS send        -> normally the placement message is on its way
          (send fails, or this process dies before t1: nothing is lost, the
           sweep finds the order in the pending index after sweep_after and
           sends the message itself)
    So once the write succeeded the caller may answer 201 whatever happens at t1.
    StorageUnavailable propagates only when the order is not stored, as far
    as a read right after the failure can tell (see docs/architecture.md).
    """
    now = clock()
    order = Order.create(terms, now, correlation_id)
    try:
        stored = repository.add(order, sweep_after=now + sweep_after)
    except OrderAlreadyExists:
        existing = repository.get(order.id)
        if existing is None:  # only if the order vanished between the two calls
            raise
        if not existing.has_same_terms(terms):
            raise IdempotencyConflict(
                f"client_order_id {terms.client_order_id!r} was already used for an order with different terms"
            ) from None
        if not _is_our_write(existing, order):
            return CreatedOrder(existing, created=False)
        # Our own write, committed on a first attempt whose answer was lost
        # and refused on the storage client's retry: still ours to enqueue.
        stored = existing
    except StorageUnavailable:
        # The write may have committed before the error (a read timeout).
        # One look decides between "stored" (go on) and "not stored" (500).
        try:
            found = repository.get(order.id)
        except StorageUnavailable:
            found = None
        if found is None or not _is_our_write(found, order):
            raise
        stored = found
    try:
        queue.request_placement(stored.id, stored.correlation_id)
    except QueueUnavailable:
        logger.warning("placement message not sent; the pending sweep will send it", extra={"order_id": stored.id})
    return CreatedOrder(stored, created=True)


def _is_our_write(stored: Order, attempted: Order) -> bool:
    # created_at has microseconds and comes from this request's clock: only
    # this request's own write can have stored exactly it.
    return stored.created_at == attempted.created_at and stored.correlation_id == attempted.correlation_id


def get_order(order_id: str, repository: OrderRepository) -> Order:
    order = repository.get(order_id)
    if order is None:
        raise OrderNotFound(order_id)
    return order


class PlacementOutcome(StrEnum):
    PLACED = "placed"
    ALREADY_SETTLED = "already_settled"  # duplicate delivery: placed or failed before
    UNKNOWN_ORDER = "unknown_order"
    RETRY = "retry"
    REJECTED = "rejected"  # refused by the exchange for good: failed, nothing to retry
    FAILED = "failed"  # attempts exhausted: failed, and the message goes to the DLQ


@dataclass(frozen=True)
class PlacementResult:
    outcome: PlacementOutcome
    order: Order | None = None
    retry_in_s: int = 0


def place_order(
    order_id: str,
    receive_count: int,
    repository: OrderRepository,
    exchange: Exchange,
    policy: RetryPolicy,
    stuck_after: timedelta,
    clock: Clock = utc_now,
    rng: random.Random | None = None,
) -> PlacementResult:
    """One placement attempt, safe to run any number of times for the same order.

    Idempotent because (1) a settled order is never sent again, and (2) the
    exchange knows our order id as the client order id and refuses a second
    order with it, which we take as "placed": that covers a redelivery after a
    crash between the exchange's answer and our write, and two workers racing.
    """
    order = repository.get(order_id)
    if order is None:
        # Cannot happen in a healthy system: the order is written before its message.
        logger.error("placement message for an unknown order", extra={"order_id": order_id})
        return PlacementResult(PlacementOutcome.UNKNOWN_ORDER)
    if not order.is_pending:
        # Execution reports may have arrived first: the exchange has the
        # order, so record its placement (Order.placed decides whether that
        # still applies) without asking the exchange again.
        order, _ = write_with_retries(repository, order, lambda o: o.placed(None, clock()))
        return PlacementResult(PlacementOutcome.ALREADY_SETTLED, order)

    # The receive count restarts at 1 on a message the sweep re-sent; the
    # attempts stored on the order do not, so the larger of both counts.
    attempt = max(receive_count, order.attempts + 1)
    try:
        ack = exchange.place(order)
    except ExchangeRejected as exc:
        rejection = f"rejected by the exchange: {exc}"
        failed, _ = write_with_retries(repository, order, lambda o: o.failed(rejection, clock()))
        return PlacementResult(PlacementOutcome.REJECTED, failed)
    except ExchangeUnavailable as exc:
        if policy.is_last(attempt):
            reason = f"exchange unavailable after {attempt} attempts: {exc}"
            failed, _ = write_with_retries(repository, order, lambda o: o.failed(reason, clock()))
            return PlacementResult(PlacementOutcome.FAILED, failed)
        delay, error = policy.delay_after(attempt, rng), str(exc)
        # The message comes back after delay; only well after that is the
        # order stuck, so the sweep does not send a second message meanwhile.
        retrying, _ = write_with_retries(
            repository,
            order,
            lambda o: o.attempt_failed(error, clock()),
            sweep_after=lambda: clock() + timedelta(seconds=delay) + stuck_after,
        )
        return PlacementResult(PlacementOutcome.RETRY, retrying, retry_in_s=delay)
    placed, _ = write_with_retries(repository, order, lambda o: o.placed(ack.exchange_order_id, clock()))
    if placed.status is OrderStatus.FAILED:
        # Another delivery gave up on it while this one got through: the
        # exchange holds an order we show as failed. A human must look.
        logger.error(
            "exchange accepted an order already marked failed",
            extra={"order_id": order_id, "exchange_order_id": ack.exchange_order_id},
        )
    return PlacementResult(PlacementOutcome.PLACED, placed)


# A handful of concurrent writers at most: a redelivery, the sweep, a batch
# of execution reports. More conflicts than this means something is wrong.
_WRITE_RACES = 5


def write_with_retries(
    repository: OrderRepository,
    order: Order,
    change: Callable[[Order], Order],
    sweep_after: Callable[[], datetime | None] = lambda: None,
) -> tuple[Order, bool]:
    """Apply change to the order and write it conditionally; on a concurrent write, re-read and apply again.

    The first try uses the copy already read, so the common path costs one
    write and no read. Returns the order as stored now and whether this call
    wrote it: a change the stored order no longer allows (InvalidTransition)
    or a change that changes nothing is not written.
    """
    current = order
    for _ in range(_WRITE_RACES):
        try:
            changed = change(current)
        except InvalidTransition:
            return current, False
        if changed == current:
            return current, False
        try:
            return repository.update(changed, sweep_after=sweep_after()), True
        except ConcurrentModification:
            reread = repository.get(order.id)
            if reread is None:
                raise OrderNotFound(order.id) from None
            current = reread
    raise ConcurrentModification(order.id)


def sweep_pending(
    repository: OrderRepository,
    queue: PlacementQueue,
    stuck_after: timedelta,
    limit: int,
    clock: Clock = utc_now,
) -> int:
    """Re-send the placement message of every order pending past its sweep time; returns how many."""
    now = clock()
    resent = 0
    due = repository.pending_due_for_sweep(now, limit)
    for order in repository.get_many(due).values() if due else ():
        if not order.is_pending:
            continue  # the index is eventually consistent; the table is not
        order_id = order.id
        try:
            # Push the sweep time first: if another sweep or a worker wrote
            # meanwhile, it is being handled and we leave it alone.
            repository.update(order, sweep_after=now + stuck_after)
        except ConcurrentModification:
            continue
        queue.request_placement(order_id, order.correlation_id)
        resent += 1
    if resent:
        logger.warning("re-enqueued stuck pending orders", extra={"count": resent})
    return resent


def reopen_failed_order(
    order_id: str,
    repository: OrderRepository,
    queue: PlacementQueue,
    stuck_after: timedelta,
    clock: Clock = utc_now,
) -> bool:
    """Operator redrive: a failed order becomes pending and is placed again; True if it was reopened.

    Safe to repeat: an order that is not failed (already reopened, placed,
    unknown) is left alone. If the process dies between the write and the
    send, the order is pending with a sweep time, so the sweep sends it.
    """
    order = repository.get(order_id)
    if order is None:
        return False
    now = clock()
    try:
        reopened = order.reopened(now)
    except InvalidTransition:
        return False
    try:
        repository.update(reopened, sweep_after=now + stuck_after)
    except ConcurrentModification:
        return False  # someone else changed it meanwhile; the next redrive looks again
    queue.request_placement(order_id, order.correlation_id)
    return True
