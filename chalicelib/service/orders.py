"""Use cases of orders: create, read, list, cancel, place, and re-enqueue the stuck ones."""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from chalicelib.adapters.exchange import CancelOutcome, Exchange, ExchangeRejected, ExchangeUnavailable
from chalicelib.adapters.queue import PlacementQueue, QueueUnavailable
from chalicelib.adapters.repository import (
    ConcurrentModification,
    OrderAlreadyExists,
    OrderPage,
    OrderQuery,
    OrderRepository,
    StorageUnavailable,
)
from chalicelib.domain.model import (
    IdempotencyConflict,
    InvalidTransition,
    Order,
    OrderNotCancelable,
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
    account_id: str,
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
    order = Order.create(account_id, terms, now, correlation_id)
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


def get_order(order_id: str, account_id: str, repository: OrderRepository) -> Order:
    """The account's order; another account's order is not found, exactly like one that does not exist."""
    order = repository.get(order_id)
    if order is None or order.account_id != account_id:
        raise OrderNotFound(order_id)
    return order


def list_orders(query: OrderQuery, repository: OrderRepository) -> OrderPage:
    return repository.list_for_account(query)


def cancel_order(
    order_id: str,
    account_id: str,
    repository: OrderRepository,
    queue: PlacementQueue,
    stuck_after: timedelta,
    clock: Clock = utc_now,
) -> Order:
    """The client's cancel: canceled at once when the exchange cannot have the order, else pending_cancel.

    Timeline of a pending_cancel, as for create_order:
      t0  conditional write -> pending_cancel, in the sweep's index with sweep_after = t0 + stuck_after
      t1  SQS send          -> a worker asks the exchange to cancel
          (send fails or we die before t1: the sweep sends the cancel message)
      t2  the exchange's canceled (or fill) report on the feed settles the order
    Raises OrderNotFound (not the caller's) and OrderNotCancelable (already done).
    """
    order = get_order(order_id, account_id, repository)
    order.cancel_requested(clock())  # a done order: OrderNotCancelable before any write
    try:
        canceled, _ = write_with_retries(
            repository, order, lambda o: o.cancel_requested(clock()), sweep_after=lambda: clock() + stuck_after
        )
    except OrderNotCancelable:
        # Done between our read and our write: by the exchange's final
        # report, a concurrent cancel, or our own write whose answer was lost
        # (the storage client's retry then loses the race against it).
        canceled = get_order(order_id, account_id, repository)
        if canceled.status is not OrderStatus.CANCELED:
            raise
    if canceled.status is OrderStatus.PENDING_CANCEL:
        # Also when this call wrote nothing (a repeated DELETE, or our first
        # write committed without an answer): one more message is harmless,
        # the cancel request is idempotent, and it spares waiting for the sweep.
        try:
            queue.request_cancel(canceled.id, canceled.correlation_id)
        except QueueUnavailable:
            logger.warning("cancel message not sent; the sweep will send it", extra={"order_id": canceled.id})
    return canceled


class PlacementOutcome(StrEnum):
    PLACED = "placed"
    ALREADY_SETTLED = "already_settled"  # duplicate delivery: placed or failed before
    UNKNOWN_ORDER = "unknown_order"
    IN_FLIGHT = "in_flight"  # another delivery is placing it right now; its lease covers a crash
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
    placement_lease: timedelta,
    clock: Clock = utc_now,
    rng: random.Random | None = None,
) -> PlacementResult:
    """One placement attempt, safe to run any number of times for the same order.

    Idempotent because (1) only a pending order is sent, after claiming it
    with a versioned write (which also keeps it from a racing cancel), and (2) the
    exchange knows our order id as the client order id and refuses a second
    order with it, which we take as "placed": that covers a redelivery after a
    crash between the exchange's answer and our write, and two workers racing.
    """
    order = repository.get(order_id)
    if order is None:
        # Cannot happen in a healthy system: the order is written before its message.
        logger.error("placement message for an unknown order", extra={"order_id": order_id})
        return PlacementResult(PlacementOutcome.UNKNOWN_ORDER)
    # Claim the order before calling the exchange (a versioned write): a
    # cancel that comes first makes this write fail and the order is never
    # sent; a cancel that comes after sees the claim and asks the exchange.
    now = clock()
    lease_until = now + placement_lease
    claimed, wrote = write_with_retries(
        repository,
        order,
        lambda o: o.claimed_for_placement(clock(), lease_until),
        sweep_after=lambda: lease_until + stuck_after,
    )
    if not wrote and not (claimed.is_pending and claimed.placing_until == lease_until):
        # (The second test: our own claim committed, but its answer was lost
        # and the storage client's retry met it. The lease is ours: go on.)
        return _not_ours_to_place(claimed, repository, clock)

    # The receive count restarts at 1 on a message the sweep re-sent; the
    # attempts stored on the order do not, so the larger of both counts.
    attempt = max(receive_count, claimed.attempts + 1)
    try:
        ack = exchange.place(claimed)
    except ExchangeRejected as exc:
        rejection = f"rejected by the exchange: {exc}"
        failed, _ = write_with_retries(repository, claimed, lambda o: _failed(o, rejection, clock()))
        return _settled_or(PlacementOutcome.REJECTED, failed)
    except ExchangeUnavailable as exc:
        if policy.is_last(attempt):
            reason = f"exchange unavailable after {attempt} attempts: {exc}"
            failed, _ = write_with_retries(repository, claimed, lambda o: _failed(o, reason, clock()))
            return _settled_or(PlacementOutcome.FAILED, failed)
        delay, error = policy.delay_after(attempt, rng), str(exc)
        # The message comes back after delay; only well after that is the
        # order stuck, so the sweep does not send a second message meanwhile.
        retrying, _ = write_with_retries(
            repository,
            claimed,
            lambda o: o.attempt_failed(error, clock()),
            sweep_after=lambda: clock() + timedelta(seconds=delay) + stuck_after,
        )
        if not retrying.is_pending:
            return PlacementResult(PlacementOutcome.ALREADY_SETTLED, retrying)
        return PlacementResult(PlacementOutcome.RETRY, retrying, retry_in_s=delay)
    placed, _ = write_with_retries(repository, claimed, lambda o: o.placed(ack.exchange_order_id, clock()))
    if placed.status is OrderStatus.FAILED or (placed.status is OrderStatus.CANCELED and placed.placed_at is None):
        # Another delivery gave up on it, or its lease ran out and the client
        # canceled it, while this one got through: the exchange holds an order
        # we show as done. A human must look.
        logger.error(
            "exchange accepted an order already marked done",
            extra={"order_id": order_id, "exchange_order_id": ack.exchange_order_id, "status": placed.status.value},
        )
    return PlacementResult(PlacementOutcome.PLACED, placed)


def _not_ours_to_place(order: Order, repository: OrderRepository, clock: Clock) -> PlacementResult:
    if order.is_pending:
        # Pending with a live lease: another delivery is at the exchange with
        # it. Dropping this message is safe: if that worker dies, the lease
        # runs out and the sweep sends a new message.
        return PlacementResult(PlacementOutcome.IN_FLIGHT, order)
    if order.known_to_exchange:
        # Execution reports arrived first: the exchange has the order, so
        # record its placement (Order.placed decides whether that still
        # applies) without asking the exchange again.
        order, _ = write_with_retries(repository, order, lambda o: o.placed(None, clock()))
    # Anything else (a client's cancel of an order never sent, a failed
    # order) is left alone: it must not reach the exchange.
    return PlacementResult(PlacementOutcome.ALREADY_SETTLED, order)


def _failed(order: Order, reason: str, now: datetime) -> Order:
    # A pending_cancel order is not failed: the client canceled it, and the
    # cancel request finds out from the exchange whether it was ever placed.
    return order.failed(reason, now) if order.is_pending else order.attempt_failed(reason, now)


def _settled_or(outcome: PlacementOutcome, order: Order) -> PlacementResult:
    # The client asked to cancel while this attempt was in flight: the order
    # is pending_cancel and the cancel worker settles it with the exchange.
    if order.status is OrderStatus.PENDING_CANCEL:
        return PlacementResult(PlacementOutcome.ALREADY_SETTLED, order)
    return PlacementResult(outcome, order)


def _again_later(
    order: Order,
    receive_count: int,
    delay_s: int,
    outcome: CancelRequestOutcome,
    repository: OrderRepository,
    policy: RetryPolicy,
    stuck_after: timedelta,
    clock: Clock,
) -> CancelRequestResult:
    if not policy.is_last(receive_count):
        return CancelRequestResult(outcome, order, retry_in_s=delay_s)
    # This message's receives are used up and the DLQ is no place for it (the
    # order may be live at the exchange): its sweep time is moved past the
    # delay, and the sweep sends a fresh cancel message then, as often as it takes.
    _check_again_after(order, clock() + timedelta(seconds=delay_s) + stuck_after, repository)
    return CancelRequestResult(CancelRequestOutcome.LEFT_TO_SWEEP, order)


class CancelRequestOutcome(StrEnum):
    SENT = "sent"  # the exchange accepted the cancel; its canceled report settles the order
    TOO_LATE = "too_late"  # done at the exchange already; the feed says how
    CANCELED_UNPLACED = "canceled_unplaced"  # the exchange never had it: canceled here
    NOTHING_TO_DO = "nothing_to_do"  # not pending_cancel (any more), or unknown
    WAIT = "wait"  # "unknown order", but a placement we sent may still land: ask again after that
    RETRY = "retry"  # exchange unavailable: ask again after a backoff
    LEFT_TO_SWEEP = "left_to_sweep"  # attempts of this message used up: the sweep sends a new one


@dataclass(frozen=True)
class CancelRequestResult:
    outcome: CancelRequestOutcome
    order: Order | None = None
    retry_in_s: int = 0


def request_exchange_cancel(
    order_id: str,
    receive_count: int,
    repository: OrderRepository,
    exchange: Exchange,
    policy: RetryPolicy,
    stuck_after: timedelta,
    clock: Clock = utc_now,
    rng: random.Random | None = None,
) -> CancelRequestResult:
    """Ask the exchange to cancel a pending_cancel order; safe to run any number of times."""
    order = repository.get(order_id)
    if order is None or order.status is not OrderStatus.PENDING_CANCEL:
        return CancelRequestResult(CancelRequestOutcome.NOTHING_TO_DO, order)
    # Asked at once, even while a placement may be on its way: a live order
    # is canceled sooner, and "unknown order" is only believed once nothing
    # we sent can still arrive (below).
    try:
        outcome = exchange.cancel(order.id)
    except ExchangeUnavailable:
        delay = policy.delay_after(receive_count, rng)
        return _again_later(
            order, receive_count, delay, CancelRequestOutcome.RETRY, repository, policy, stuck_after, clock
        )
    now = clock()
    if outcome is CancelOutcome.UNKNOWN_ORDER:
        if order.placement_may_still_land(now) and order.placement_quiet_at is not None:
            # The exchange may yet accept what we sent: ask again after that.
            wait_s = max(1, math.ceil((order.placement_quiet_at - now).total_seconds()))
            return _again_later(
                order, receive_count, wait_s, CancelRequestOutcome.WAIT, repository, policy, stuck_after, clock
            )
        canceled, wrote = write_with_retries(repository, order, lambda o: o.canceled_unplaced(clock()))
        if not wrote and canceled.status is OrderStatus.PENDING_CANCEL:
            # It accepted this order (we hold its id or its placement), yet
            # denies knowing it: not ours to settle. A human must look.
            logger.error("exchange does not know an order it accepted", extra={"order_id": order_id})
            _check_again_after(canceled, now + _SLOW_RECHECK * stuck_after, repository)
            return CancelRequestResult(CancelRequestOutcome.NOTHING_TO_DO, canceled)
        return CancelRequestResult(CancelRequestOutcome.CANCELED_UNPLACED, canceled)
    if outcome is CancelOutcome.TOO_LATE:
        # Done at the exchange: its final report settles the order. Should
        # that report never be applied (it was set aside as poison, say), the
        # sweep asks again now and then, not every stuck_after.
        _check_again_after(order, now + _SLOW_RECHECK * stuck_after, repository)
        return CancelRequestResult(CancelRequestOutcome.TOO_LATE, order)
    return CancelRequestResult(CancelRequestOutcome.SENT, order)


# How much later than usual the sweep looks again at a pending_cancel order
# the exchange says is done: its final report is normally moments away.
_SLOW_RECHECK = 10


def _check_again_after(order: Order, when: datetime, repository: OrderRepository) -> None:
    # If someone wrote it meanwhile, the sweep time stays as they left it.
    with contextlib.suppress(ConcurrentModification):
        repository.update(order, sweep_after=when)


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
    """Re-send the placement (or cancel) message of every order owed work past its sweep time; returns how many."""
    now = clock()
    resent = 0
    due = repository.pending_due_for_sweep(now, limit)
    for order in repository.get_many(due).values() if due else ():
        if not order.needs_work:
            continue  # the index is eventually consistent; the table is not
        order_id = order.id
        try:
            # Push the sweep time first: if another sweep or a worker wrote
            # meanwhile, it is being handled and we leave it alone.
            repository.update(order, sweep_after=now + stuck_after)
        except ConcurrentModification:
            continue
        if order.is_pending:
            queue.request_placement(order_id, order.correlation_id)
        else:
            queue.request_cancel(order_id, order.correlation_id)
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
