"""Asking the exchange to cancel an order the client canceled (pending_cancel): one request per orders-queue message."""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from chalicelib.adapters.exchange import CancelOutcome, ExchangeUnavailable
from chalicelib.adapters.repository import ConcurrentModification, OrderRepository
from chalicelib.domain.model import Order, OrderStatus, PlacementStage
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.order_writes import write_with_retries
from chalicelib.service.replace_ends import release_original

logger = logging.getLogger(__name__)

# How much later than usual the sweep looks again at a pending_cancel order
# the exchange says is done: its final report is normally moments away.
_SLOW_RECHECK = 10


class CancelRequestOutcome(StrEnum):
    SENT = "sent"  # the exchange accepted the cancel; its canceled report settles the order
    TOO_LATE = "too_late"  # done at the exchange already; the feed says how
    CANCELED_UNPLACED = "canceled_unplaced"  # the exchange never had it: canceled here
    NOTHING_TO_DO = "nothing_to_do"  # not pending_cancel (any more), or unknown
    SENT_RECENTLY = "sent_recently"  # another delivery asked the exchange within the resend interval
    WAIT = "wait"  # "unknown order", but a placement we sent may still land: ask again after that
    RETRY = "retry"  # exchange unavailable: ask again after a backoff
    LEFT_TO_SWEEP = "left_to_sweep"  # attempts of this message used up: the sweep sends a new one


@dataclass(frozen=True)
class CancelRequestResult:
    outcome: CancelRequestOutcome
    order: Order | None = None
    retry_in_s: int = 0


def request_exchange_cancel(order_id: str, receive_count: int, dependencies: Dependencies) -> CancelRequestResult:
    """Ask the exchange to cancel a pending_cancel order (_request_cancel); a replacement it ends frees its original.

    As placement does, on every delivery: a redelivery makes up for a crash between the writes.
    """
    result = _request_cancel(order_id, receive_count, dependencies)
    if result.order is not None:
        release_original(result.order, dependencies)
    return result


def _request_cancel(order_id: str, receive_count: int, dependencies: Dependencies) -> CancelRequestResult:
    """Ask the exchange to cancel a pending_cancel order; safe to run any number of times."""
    repository = dependencies.orders
    order = repository.get(order_id)
    if order is None or order.status is not OrderStatus.PENDING_CANCEL:
        return CancelRequestResult(CancelRequestOutcome.NOTHING_TO_DO, order)
    order, claimed = _claim_send(order, dependencies)
    if not claimed:
        if order.status is OrderStatus.PENDING_CANCEL:
            return CancelRequestResult(CancelRequestOutcome.SENT_RECENTLY, order)
        return CancelRequestResult(CancelRequestOutcome.NOTHING_TO_DO, order)
    # Asked at once, even while a placement may be on its way: a live order
    # is canceled sooner, and "unknown order" is only believed once nothing
    # we sent can still arrive (below).
    try:
        outcome = dependencies.exchange.cancel(order.id)
    except ExchangeUnavailable:
        delay = dependencies.retry_policy.delay_after(receive_count, dependencies.jitter)
        return _again_later(
            order, receive_count, _past_interval(delay, dependencies), CancelRequestOutcome.RETRY, dependencies
        )
    now = dependencies.clock()
    if outcome is CancelOutcome.UNKNOWN_ORDER:
        match order.placement_stage(now):
            case PlacementStage.AT_THE_EXCHANGE | PlacementStage.MAY_STILL_LAND:
                # The exchange may yet accept what we sent: ask again after that.
                quiet_at = order.placement_quiet_at or order.placing_until or now
                wait_s = _past_interval(max(1, math.ceil((quiet_at - now).total_seconds())), dependencies)
                return _again_later(order, receive_count, wait_s, CancelRequestOutcome.WAIT, dependencies)
            case PlacementStage.NEVER_SENT | PlacementStage.QUIET:
                return _cancel_unplaced(order, now, dependencies)
    if outcome is CancelOutcome.TOO_LATE:
        # Done at the exchange: its final report settles the order. Should
        # that report never be applied (it was set aside as poison, say), the
        # sweep asks again now and then, not every pending_sweep_after.
        _check_again_after(order, now + _SLOW_RECHECK * dependencies.timings.pending_sweep_after, repository)
        return CancelRequestResult(CancelRequestOutcome.TOO_LATE, order)
    return CancelRequestResult(CancelRequestOutcome.SENT, order)


def _claim_send(order: Order, dependencies: Dependencies) -> tuple[Order, bool]:
    """Record, before calling the exchange, that this delivery sends the cancel; False if another did lately.

    A versioned write: of two deliveries at once (a client's repeat and the
    sweep's, say) only one wins and calls the exchange. The write also moves
    the sweep time: the sweep re-sends only if the order is still
    pending_cancel a whole pending_sweep_after after this send (a lost
    answer, a worker that died right after this write), so no cancel is lost.
    """
    clock, timings = dependencies.clock, dependencies.timings
    now = clock()
    stored, wrote = write_with_retries(
        dependencies.orders,
        order,
        lambda o: o.cancel_sent(now, timings.cancel_resend_interval),
        sweep_after=lambda: clock() + timings.pending_sweep_after,
    )
    # Our write can commit with its answer lost: the storage client's retry
    # meets it as a conflict, and the re-read finds a send "within the
    # interval". It is ours if it carries this call's own clock reading
    # (microseconds) and the copy we read did not: go on and call the exchange.
    ours = stored.status is OrderStatus.PENDING_CANCEL and stored.cancel_sent_at == now and order.cancel_sent_at != now
    return stored, wrote or ours


def _past_interval(delay_s: int, dependencies: Dependencies) -> int:
    # This message comes back to ask again: not before the interval since our
    # send is over, or it would find that send "recent" and drop itself.
    return max(delay_s, math.ceil(dependencies.timings.cancel_resend_interval.total_seconds()))


def _cancel_unplaced(order: Order, now: datetime, dependencies: Dependencies) -> CancelRequestResult:
    """The exchange does not know the order, and nothing we sent can still reach it: canceled on our side."""
    clock = dependencies.clock
    canceled, wrote = write_with_retries(dependencies.orders, order, lambda o: o.canceled_unplaced(clock()))
    if not wrote and canceled.status is OrderStatus.PENDING_CANCEL:
        # It accepted this order (we hold its id or its placement), yet
        # denies knowing it: not ours to settle. A human must look.
        logger.error("exchange does not know an order it accepted", extra={"order_id": order.id})
        later = now + _SLOW_RECHECK * dependencies.timings.pending_sweep_after
        _check_again_after(canceled, later, dependencies.orders)
        return CancelRequestResult(CancelRequestOutcome.NOTHING_TO_DO, canceled)
    return CancelRequestResult(CancelRequestOutcome.CANCELED_UNPLACED, canceled)


def _again_later(
    order: Order, receive_count: int, delay_s: int, outcome: CancelRequestOutcome, dependencies: Dependencies
) -> CancelRequestResult:
    if not dependencies.retry_policy.is_last(receive_count):
        return CancelRequestResult(outcome, order, retry_in_s=delay_s)
    # This message's receives are used up and the DLQ is no place for it (the
    # order may be live at the exchange): its sweep time is moved past the
    # delay, and the sweep sends a fresh cancel message then, as often as it takes.
    later = dependencies.clock() + timedelta(seconds=delay_s) + dependencies.timings.pending_sweep_after
    _check_again_after(order, later, dependencies.orders)
    return CancelRequestResult(CancelRequestOutcome.LEFT_TO_SWEEP, order)


def _check_again_after(order: Order, when: datetime, repository: OrderRepository) -> None:
    # If someone wrote it meanwhile, the sweep time stays as they left it.
    with contextlib.suppress(ConcurrentModification):
        repository.update(order, sweep_after=when)
