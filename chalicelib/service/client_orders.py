"""The client's use cases of orders (the HTTP API): create, read, list and cancel, always on behalf of one account."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from chalicelib.adapters.queue import QueueUnavailable
from chalicelib.adapters.repository import OrderAlreadyExists, OrderPage, OrderQuery, StorageUnavailable
from chalicelib.domain.model import (
    IdempotencyConflict,
    Order,
    OrderNotCancelable,
    OrderNotFound,
    OrderStatus,
    OrderTerms,
)
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.order_writes import write_with_retries

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreatedOrder:
    order: Order
    created: bool  # False: an earlier request with the same client order id created it


def create_order(
    account_id: str, terms: OrderTerms, dependencies: Dependencies, correlation_id: str | None = None
) -> CreatedOrder:
    """Store the order, then ask for its placement.

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
    order = Order.create(account_id, terms, now, correlation_id)
    try:
        stored = repository.add(order, sweep_after=now + dependencies.timings.pending_sweep_after)
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
    except StorageUnavailable as lost:
        stored = _read_back_own_write(order, dependencies, lost, started=now)
    try:
        dependencies.orders_queue.request_placement(stored.id, stored.correlation_id)
    except QueueUnavailable:
        logger.warning("placement message not sent; the pending sweep will send it", extra={"order_id": stored.id})
    return CreatedOrder(stored, created=True)


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


def list_orders(query: OrderQuery, dependencies: Dependencies) -> OrderPage:
    return dependencies.orders.list_for_account(query)


def cancel_order(order_id: str, account_id: str, dependencies: Dependencies) -> Order:
    """The client's cancel: canceled at once when the exchange cannot have the order, else pending_cancel.

    Timeline of a pending_cancel, as for create_order:
      t0  conditional write -> pending_cancel, in the sweep's index with sweep_after = t0 + pending_sweep_after
      t1  SQS send          -> a worker asks the exchange to cancel
          (send fails or we die before t1: the sweep sends the cancel message)
      t2  the exchange's canceled (or fill) report on the feed settles the order
    Raises OrderNotFound (not the caller's) and OrderNotCancelable (already done).
    """
    clock = dependencies.clock
    order = get_order(order_id, account_id, dependencies)
    order.cancel_requested(clock())  # a done order: OrderNotCancelable before any write
    try:
        canceled, _ = write_with_retries(
            dependencies.orders,
            order,
            lambda o: o.cancel_requested(clock()),
            sweep_after=lambda: clock() + dependencies.timings.pending_sweep_after,
        )
    except OrderNotCancelable:
        # Done between our read and our write: by the exchange's final
        # report, a concurrent cancel, or our own write whose answer was lost
        # (the storage client's retry then loses the race against it).
        canceled = get_order(order_id, account_id, dependencies)
        if canceled.status is not OrderStatus.CANCELED:
            raise
    if canceled.status is OrderStatus.PENDING_CANCEL:
        # Also when this call wrote nothing (a repeated DELETE, or our first
        # write committed without an answer): one more message is harmless,
        # the cancel request is idempotent, and it spares waiting for the sweep.
        try:
            dependencies.orders_queue.request_cancel(canceled.id, canceled.correlation_id)
        except QueueUnavailable:
            logger.warning("cancel message not sent; the sweep will send it", extra={"order_id": canceled.id})
    return canceled
