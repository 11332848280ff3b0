"""Conditional writes of an order that survive concurrent writers: the one way every use case changes an order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from chalicelib.adapters.repository import ConcurrentModification, OrderRepository
from chalicelib.domain.model import InvalidTransition, Order, OrderNotFound

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
    or a change that changes nothing is not written. sweep_after: when the
    sweep should next look at the order, if it is still owed work.
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
