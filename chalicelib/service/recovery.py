"""Orders our workers owe something, sent again: the scheduled sweep of quiet orders and an operator's reopen."""

from __future__ import annotations

import logging

from chalicelib.adapters.repository import ConcurrentModification
from chalicelib.domain.model import InvalidTransition
from chalicelib.service.dependencies import Dependencies

logger = logging.getLogger(__name__)


def sweep_pending(dependencies: Dependencies, limit: int) -> int:
    """Re-send the placement (or cancel) message of every order owed work past its sweep time; returns how many."""
    repository, queue = dependencies.orders, dependencies.orders_queue
    now = dependencies.clock()
    resent = 0
    due = repository.pending_due_for_sweep(now, limit)
    for order in repository.get_many(due).values() if due else ():
        if not order.needs_work:
            continue  # the index is eventually consistent; the table is not
        order_id = order.id
        try:
            # Push the sweep time first: if another sweep or a worker wrote
            # meanwhile, it is being handled and we leave it alone.
            repository.update(order, sweep_after=now + dependencies.timings.pending_sweep_after)
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


def reopen_failed_order(order_id: str, dependencies: Dependencies, by: str) -> bool:
    """Operator redrive (by: the operator): a failed order becomes pending and is placed again; True if reopened.

    Safe to repeat: an order that is not failed (already reopened, placed,
    unknown) is left alone. If the process dies between the write and the
    send, the order is pending with a sweep time, so the sweep sends it.
    """
    repository = dependencies.orders
    order = repository.get(order_id)
    if order is None:
        return False
    now = dependencies.clock()
    try:
        reopened = order.reopened(now, by)
    except InvalidTransition:
        return False
    try:
        repository.update(reopened, sweep_after=now + dependencies.timings.pending_sweep_after)
    except ConcurrentModification:
        return False  # someone else changed it meanwhile; the next redrive looks again
    dependencies.orders_queue.request_placement(order_id, order.correlation_id)
    return True
