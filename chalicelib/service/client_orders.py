"""The client's use cases of orders (the HTTP API): create, read, list and cancel, always on behalf of one account."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from chalicelib.adapters.queue import QueueUnavailable
from chalicelib.adapters.reference_prices import ReferencePriceUnavailable
from chalicelib.adapters.repository import (
    ConcurrentModification,
    OrderAlreadyExists,
    OrderPage,
    OrderQuery,
    StorageUnavailable,
)
from chalicelib.domain.model import (
    IdempotencyConflict,
    Order,
    OrderNotCancelable,
    OrderNotFound,
    OrderStatus,
    OrderTerms,
    order_id_for_client_key,
)
from chalicelib.domain.order_terms import ExpiryRefused, check_expiry
from chalicelib.domain.risk import RiskLimitExceeded
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.order_writes import write_with_retries
from chalicelib.service.pre_trade_risk import check_new_order
from chalicelib.service.replace_ends import release_original

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreatedOrder:
    order: Order
    created: bool  # False: an earlier request with the same client order id created it


def create_order(
    account_id: str, terms: OrderTerms, dependencies: Dependencies, correlation_id: str | None = None
) -> CreatedOrder:
    """Check a gtd order's expiry and the account's pre-trade risk limits, store the order, then ask for its placement.

    The conditional write is the commit point. Timeline of the guarantee:
      t0  write succeeds  -> the order exists, pending, with sweep_after = t0 + pending_sweep_after
      t1  SQS send        -> normally the placement message is on its way
          (send fails, or this process dies before t1: nothing is lost, the
           sweep finds the order in the pending index after pending_sweep_after
           and sends the message itself)
    So once the write succeeded the caller may answer 201 whatever happens at t1.
    StorageUnavailable propagates when the order is not stored, or when the
    table stays unreachable for the whole read-back (see docs/architecture.md).
    """
    repository = dependencies.orders
    now = dependencies.clock()
    order = Order.create(account_id, terms.to_the_second(), now, correlation_id)
    _check_new_order(order, terms, now, dependencies)
    try:
        stored = repository.add(order, sweep_after=now + dependencies.timings.pending_sweep_after)
    except OrderAlreadyExists:
        existing = repository.get(order.id)
        if existing is None:  # only if the order vanished between the two calls
            raise
        if not existing.has_same_terms(order.terms):
            raise IdempotencyConflict(
                f"client_order_id {terms.client_order_id!r} was already used for an order with different terms"
            ) from None
        if not _is_our_write(existing, order):
            return CreatedOrder(existing, created=False)
        # Our own write, committed on a first attempt whose answer was lost
        # and refused on the storage client's retry: still ours to enqueue.
        stored = existing
    except StorageUnavailable as lost:
        stored = _read_back_own_write(order, dependencies, lost, started=now)
    try:
        dependencies.orders_queue.request_placement(stored.id, stored.correlation_id)
    except QueueUnavailable:
        logger.warning("placement message not sent; the pending sweep will send it", extra={"order_id": stored.id})
    return CreatedOrder(stored, created=True)


def _check_new_order(order: Order, sent: OrderTerms, now: datetime, dependencies: Dependencies) -> None:
    """Refuse an expiry past or too far ahead (ExpiryRefused, on the terms as `sent`, before to_the_second) and an
    order over the account's limits (RiskLimitExceeded, ReferencePriceUnavailable), unless the order exists.

    An idempotent retry (same client_order_id) of an order already created was
    within the limits when it was created, and is itself among the open
    orders it would now be counted against; its expiry may have passed since
    (a client retrying a lost answer late): it must get its order back (200),
    not a refusal. So a refused order with a client_order_id is looked up
    (one read, on refusals only); if stored, the create goes on to the
    conditional put, which finds it (or answers 409 for other terms).
    """
    try:
        check_expiry(sent, now)  # no I/O: first
        check_new_order(order.account_id, order.terms, dependencies)
    except (ExpiryRefused, RiskLimitExceeded, ReferencePriceUnavailable):
        if order.terms.client_order_id is None or dependencies.orders.get(order.id) is None:
            raise


# Pauses between look-ups after a write that lost its answer: a short outage
# (a restarted endpoint, a reset connection) is over before the last one.
READ_BACK_PAUSES_S = (0.1, 0.2, 0.4, 0.8, 1.6, 2.0)  # the last one cut to what the budget leaves


def _read_back_own_write(
    order: Order, dependencies: Dependencies, lost: StorageUnavailable, started: datetime
) -> Order:
    """The order as this request stored it, if it did; else StorageUnavailable (the API's 500).

    The write may have committed before the error (a read timeout, a reset
    connection). The first answer of the table decides between "stored"
    (go on: 201) and "not stored" (500, and nothing will ever place it).
    One look is not enough: the outage that lost the write's answer usually
    loses the look's too, and a 500 for an order that is stored, and that the
    sweep will place, tells the client the opposite of what happens. So it
    asks again until Timings.write_read_back after the create began (a
    write that timed out has used most of it: then one look, as before); a
    look-up itself is bounded by the client's timeouts. Only a table still
    unreachable then leaves the outcome unknown (a client that retries with
    the same client_order_id then gets its order, or creates it).
    """
    # From the start of the create: a write that timed out has used its time already.
    budget = dependencies.timings.write_read_back
    deadline = started + budget
    waited = timedelta()
    for pause_s in (0.0, *READ_BACK_PAUSES_S):
        if pause_s:
            # Both bounds: the pauses alone, and the time the write and the look-ups took too.
            remaining = min(deadline - dependencies.clock(), budget - waited)
            if remaining <= timedelta():
                break
            pause = min(timedelta(seconds=pause_s), remaining)
            dependencies.sleep(pause.total_seconds())
            waited += pause
        try:
            found = dependencies.orders.get(order.id)
        except StorageUnavailable:
            continue
        if found is not None and _is_our_write(found, order):
            return found
        raise lost
    logger.warning("order write outcome unknown: the table did not answer", extra={"order_id": order.id})
    raise lost


def _is_our_write(stored: Order, attempted: Order) -> bool:
    # created_at has microseconds and comes from this request's clock: only
    # this request's own write can have stored exactly it.
    return stored.created_at == attempted.created_at and stored.correlation_id == attempted.correlation_id


def get_order(order_id: str, account_id: str, dependencies: Dependencies) -> Order:
    """The account's order; another account's order is not found, exactly like one that does not exist."""
    order = dependencies.orders.get(order_id)
    if order is None or order.account_id != account_id:
        raise OrderNotFound(order_id)
    return order


def get_order_by_client_order_id(client_order_id: str, account_id: str, dependencies: Dependencies) -> Order:
    """The account's order created with this client_order_id: one read, as the key names its id."""
    order_id = order_id_for_client_key(account_id, client_order_id)
    order = get_order(order_id, account_id, dependencies)
    # The id is a hash of the account and the key; the stored key is compared all the same.
    if order.terms.client_order_id != client_order_id:
        raise OrderNotFound(order_id)
    return order


def list_orders(query: OrderQuery, dependencies: Dependencies) -> OrderPage:
    return dependencies.orders.list_for_account(query)


def cancel_order(order_id: str, account_id: str, dependencies: Dependencies) -> Order:
    """The client's cancel of one order by id (see cancel_read_order); OrderNotFound if not the account's."""
    return cancel_read_order(get_order(order_id, account_id, dependencies), dependencies)


def cancel_read_order(order: Order, dependencies: Dependencies) -> Order:
    """The client's cancel: canceled at once when the exchange cannot have the order, else pending_cancel.

    `order` is the caller's order as just read (strongly consistent): by
    cancel_order, or in a batch by DELETE /orders (service/cancel_all.py).

    Timeline of a pending_cancel, as for create_order:
      t0  conditional write -> pending_cancel, in the sweep's index with sweep_after = t0 + pending_sweep_after
      t1  SQS send          -> a worker asks the exchange to cancel
          (send fails or we die before t1: the sweep sends the cancel message)
      t2  the exchange's canceled (or fill) report on the feed settles the order
    Raises OrderNotCancelable (already done).
    """
    clock = dependencies.clock
    now = clock()  # one reading: the stamp that tells our own write from others' (_stamped_by_us)
    order_id, account_id = order.id, order.account_id
    order.cancel_requested(now)  # a done order: OrderNotCancelable before any write
    try:
        canceled, wrote = write_with_retries(
            dependencies.orders,
            order,
            lambda o: o.cancel_requested(now),
            sweep_after=lambda: clock() + dependencies.timings.pending_sweep_after,
        )
    except OrderNotCancelable:
        # Done between our read and our write: by the exchange's final
        # report, a concurrent cancel, or our own write whose answer was lost
        # (the storage client's retry then loses the race against it).
        canceled, wrote = get_order(order_id, account_id, dependencies), False
        if canceled.status is not OrderStatus.CANCELED:
            raise
    ours = wrote or _stamped_by_us(order.cancel_queued_at, canceled.cancel_queued_at, now)
    if canceled.status is OrderStatus.PENDING_CANCEL and (ours or _claimed_cancel_resend(canceled, dependencies)):
        try:
            dependencies.orders_queue.request_cancel(canceled.id, canceled.correlation_id)
        except QueueUnavailable:
            logger.warning("cancel message not sent; the sweep will send it", extra={"order_id": canceled.id})
    # A replacement canceled before it was ever sent: its original works on. The cancel is
    # done whatever happens here; a release that fails is the reconciler's to make up for.
    try:
        release_original(canceled, dependencies)
    except (StorageUnavailable, ConcurrentModification):
        logger.warning("original not released after its replacement's cancel", extra={"order_id": canceled.id})
    return canceled


def _claimed_cancel_resend(order: Order, dependencies: Dependencies) -> bool:
    """Whether this repeated DELETE may queue one more cancel request: the first in its interval to claim it.

    A client looping on DELETE must not flood the orders queue and the venue:
    only a repeat after Timings.cancel_resend_interval queues a request, and
    only the one whose versioned write of cancel_queued_at wins (the others
    re-read and find it recent). Within the interval the API answers 202
    without queueing: a request went out moments ago, and should it be lost
    the sweep re-sends it (the order stays in its index while pending_cancel).
    """
    now, interval = dependencies.clock(), dependencies.timings.cancel_resend_interval
    if not order.cancel_queue_due(now, interval):
        return False
    stored, claimed = write_with_retries(dependencies.orders, order, lambda o: o.cancel_queued(now, interval))
    return claimed or _stamped_by_us(order.cancel_queued_at, stored.cancel_queued_at, now)


def _stamped_by_us(read: datetime | None, stored: datetime | None, now: datetime) -> bool:
    """Whether the stored stamp is the one this request wrote, though write_with_retries says it wrote nothing.

    Our write can commit and its answer be lost: the storage client's retry
    then meets it as a conflict, and the re-read finds the order already
    changed. The stamp is this request's own clock reading (microseconds),
    so a stored stamp equal to it, where the copy we read had another, is
    our write: the cancel it stands for is ours to queue (as placement
    compares placing_until with its lease). Two requests in one microsecond
    would both queue: one cancel request more, which the worker's send
    record absorbs.
    """
    return stored == now and read != now
