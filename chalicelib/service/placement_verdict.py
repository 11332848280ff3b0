"""An order whose placement attempts ran out: failed only on the exchange's word, never on a guess.

An attempt that ends without an answer (a timeout, a reset, a 503) says
nothing about the attempts before it: the first may have been accepted and
its answer lost. So once the attempts are used up, the exchange is asked
(its order status query) before anything is concluded, and only a definite
"unknown order", asked once nothing we sent can still reach it
(Order.placement_quiet_at), lets the order fail. An order the exchange holds
is recorded as placed, with the state the exchange reports. If the exchange
cannot be asked, the order stays pending and is asked again later, with
backoff (and the sweep behind that).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from chalicelib.adapters.exchange import ExchangeUnavailable
from chalicelib.domain.model import InvalidTransition, Order, OrderStatus, VenueOrderState
from chalicelib.domain.plausibility import venue_state_problem
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.order_writes import write_with_retries

logger = logging.getLogger(__name__)

# SQS's longest message delay: a verdict due later comes from the sweep.
MAX_QUEUE_DELAY_S = 900


def venue_status(order: Order, dependencies: Dependencies) -> VenueOrderState | None:
    """The exchange's status of the order; ExchangeUnavailable when it cannot be asked or its answer cannot be true.

    An implausible answer (more filled than ordered, a price beyond the
    limit, another order's venue id) is no answer: merged, it would stay for
    good, so the order is asked about again later, like when the exchange is
    down, and a human sees the error.
    """
    venue = dependencies.exchange.status(order.id)
    problem = None if venue is None else venue_state_problem(order, venue)
    if problem:
        logger.error(
            "implausible order status answer not applied",
            extra={"order_id": order.id, "correlation_id": order.correlation_id, "reason": problem},
        )
        raise ExchangeUnavailable(f"implausible order status answer: {problem}")
    return venue


class Verdict(StrEnum):
    PLACED = "placed"  # the exchange holds it: recorded with the exchange's state
    FAILED = "failed"  # the exchange does not know it, and nothing we sent can still arrive
    SETTLED = "settled"  # someone else settled it meanwhile (a client's cancel)
    ASK_LATER = "ask_later"  # not yet: something may still land, or the exchange could not be asked


@dataclass(frozen=True)
class Settlement:
    verdict: Verdict
    order: Order
    ask_again_in_s: int = 0


def settle_exhausted(order: Order, dependencies: Dependencies) -> Settlement:
    """Ask the exchange about a pending order with no attempt left; the order as stored after it."""
    clock = dependencies.clock
    now = clock()
    if order.placement_may_still_land(now):
        # Something we sent may still land: "unknown" now would not be final.
        return Settlement(Verdict.ASK_LATER, order, _seconds_until(order.placement_quiet_at, now))
    try:
        venue = venue_status(order, dependencies)
    except ExchangeUnavailable as exc:
        return _ask_later(order, f"order status query: {exc}", dependencies)
    if venue is None:
        attempts = dependencies.retry_policy.max_attempts
        reason = f"exchange unavailable after {attempts} attempts, and it does not know the order"
        failed, _ = write_with_retries(dependencies.orders, order, lambda o: _failed(o, reason, clock()))
        if failed.status is OrderStatus.FAILED:
            return Settlement(Verdict.FAILED, failed)
        if failed.is_pending:  # claimed and sent again meanwhile: its answer, or a later verdict, decides
            return Settlement(Verdict.ASK_LATER, failed, _seconds_until(failed.placement_quiet_at, clock()))
        return Settlement(Verdict.SETTLED, failed)
    return Settlement(Verdict.PLACED, _follow_exchange(order, venue, dependencies))


def _follow_exchange(order: Order, venue: VenueOrderState, dependencies: Dependencies) -> Order:
    clock = dependencies.clock
    followed, _ = write_with_retries(dependencies.orders, order, lambda o: o.placement_confirmed(venue, clock()))
    # Its answers were lost, not the order: say so, it explains the wait.
    logger.warning(
        "exchange holds an order whose placement answers were lost",
        extra={"order_id": order.id, "status": followed.status.value, "exchange_order_id": venue.exchange_order_id},
    )
    return followed


def _ask_later(order: Order, error: str, dependencies: Dependencies) -> Settlement:
    clock, policy = dependencies.clock, dependencies.retry_policy
    # Counted as one more attempt: the backoff keeps growing while the
    # exchange cannot be asked, up to its maximum.
    delay = policy.delay_after(order.attempts + 1, dependencies.jitter)
    sweep_at = _sweep_after(delay, dependencies)
    asked, _ = write_with_retries(
        dependencies.orders, order, lambda o: o.attempt_failed(error, clock()), sweep_after=lambda: sweep_at
    )
    logger.warning("exchange could not be asked about an order", extra={"order_id": order.id, "error": error})
    return Settlement(Verdict.ASK_LATER, asked, min(delay, MAX_QUEUE_DELAY_S))


def _sweep_after(delay_s: int, dependencies: Dependencies) -> datetime:
    # Well after the message that asks again is due: the sweep only covers its loss.
    return dependencies.clock() + timedelta(seconds=delay_s) + dependencies.timings.pending_sweep_after


def _failed(order: Order, reason: str, now: datetime) -> Order:
    """Failed, if it still is what the exchange's "unknown" was about: pending, nothing sent that may land."""
    # A pending_cancel order is the cancel request's to settle with the exchange;
    # an order re-read after a write race may have been sent again meanwhile.
    if not order.is_pending or order.placement_may_still_land(now):
        raise InvalidTransition(order.status, OrderStatus.FAILED)
    return order.failed(reason, now, after_attempt=False)


def _seconds_until(moment: datetime | None, now: datetime) -> int:
    if moment is None:
        return 1
    return max(1, min(MAX_QUEUE_DELAY_S, math.ceil((moment - now).total_seconds()) + 1))
