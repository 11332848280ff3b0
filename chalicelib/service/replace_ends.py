"""When a replacement ends without the exchange taking it, its original works on: the one write that says so."""

from __future__ import annotations

import logging

from chalicelib.domain.model import Order
from chalicelib.domain.replace import ended_without_the_exchange
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.order_writes import write_with_retries

logger = logging.getLogger(__name__)


def release_original(replacement: Order, dependencies: Dependencies) -> bool:
    """If this replacement ended without the exchange taking it, its original works on (Order.replace_refused).

    Called wherever a replacement may end so (placement, its cancel), and again
    on every redelivery of its message, so a crash between the two writes
    leaves the original pending_replace only until the message comes back
    (and the reconciler, which looks at every open order, is the net under
    that: release_if_replacement_ended). True if this call released it.
    """
    if not ended_without_the_exchange(replacement) or replacement.replaces is None:
        return False
    original = dependencies.orders.get(replacement.replaces)
    if original is None:
        return False
    clock = dependencies.clock
    released, wrote = write_with_retries(
        dependencies.orders, original, lambda o: o.replace_refused(replacement.id, clock())
    )
    if wrote:
        logger.info(
            "replace not taken by the exchange: the original works on",
            extra={"order_id": original.id, "replacement_id": replacement.id, "status": released.status.value},
        )
    return wrote
