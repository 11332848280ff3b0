"""Placing an order at the exchange: one attempt per orders-queue message, safe to repeat, retried with backoff."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from chalicelib.adapters.exchange import ExchangeRejected, ExchangeUnavailable, ReplaceTooLate
from chalicelib.clock import Clock
from chalicelib.domain.model import InvalidTransition, Order, OrderStatus, VenueOrderState
from chalicelib.domain.replace import replacement_rejected
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.order_writes import write_with_retries
from chalicelib.service.placement_verdict import Settlement, Verdict, settle_exhausted, venue_status
from chalicelib.service.reconciliation import log_correction
from chalicelib.service.replace_ends import release_original

logger = logging.getLogger(__name__)


class PlacementOutcome(StrEnum):
    PLACED = "placed"
    ALREADY_SETTLED = "already_settled"  # duplicate delivery: placed or failed before
    UNKNOWN_ORDER = "unknown_order"
    IN_FLIGHT = "in_flight"  # another delivery is placing it right now; its lease covers a crash
    RETRY = "retry"
    REJECTED = "rejected"  # refused by the exchange for good: failed, nothing to retry
    FAILED = "failed"  # attempts exhausted and the exchange does not know it: failed, the message to the DLQ
    # Attempts exhausted, the exchange's word not in yet: ask it again after retry_in_s.
    AWAITING_VERDICT = "awaiting_verdict"


@dataclass(frozen=True)
class PlacementResult:
    outcome: PlacementOutcome
    order: Order | None = None
    retry_in_s: int = 0
    corrected: bool = False  # it was failed, and the exchange's acceptance corrected it


def place_order(order_id: str, receive_count: int, dependencies: Dependencies) -> PlacementResult:
    """One placement attempt (_place), then, for a replacement the exchange did not take, its original's release.

    The release runs on every delivery, whatever the attempt's outcome: a
    redelivery after a crash between the two writes makes up for it.
    """
    result = _place(order_id, receive_count, dependencies)
    if result.order is not None:
        release_original(result.order, dependencies)
    return result


def _place(order_id: str, receive_count: int, dependencies: Dependencies) -> PlacementResult:
    """One placement attempt, safe to run any number of times for the same order.

    Idempotent because (1) only a pending order is sent, after claiming it
    with a versioned write (which also keeps it from a racing cancel), and (2) the
    exchange knows our order id as the client order id and refuses a second
    order with it, which we take as "placed": that covers a redelivery after a
    crash between the exchange's answer and our write, and two workers racing.
    """
    repository, clock = dependencies.orders, dependencies.clock
    order = repository.get(order_id)
    if order is None:
        # Cannot happen in a healthy system: the order is written before its message.
        logger.error("placement message for an unknown order", extra={"order_id": order_id})
        return PlacementResult(PlacementOutcome.UNKNOWN_ORDER)
    if order.is_pending and dependencies.retry_policy.is_exhausted(order.attempts):
        # No attempt left: nothing is sent again, the exchange is asked instead.
        return _settled(settle_exhausted(order, dependencies))
    # Claim the order before calling the exchange (a versioned write): a
    # cancel that comes first makes this write fail and the order is never
    # sent; a cancel that comes after sees the claim and asks the exchange.
    timings, policy = dependencies.timings, dependencies.retry_policy
    lease_until = clock() + timings.placement_lease

    def claim(current: Order) -> Order:
        # Checked again on every re-read: another delivery may have used the
        # last attempt meanwhile, and an exhausted order is only ever asked about.
        if policy.is_exhausted(current.attempts):
            raise InvalidTransition(current.status, current.status)
        return current.claimed_for_placement(clock(), lease_until)

    claimed, wrote = write_with_retries(
        repository, order, claim, sweep_after=lambda: lease_until + timings.pending_sweep_after
    )
    if not wrote and not (claimed.is_pending and claimed.placing_until == lease_until):
        # (The second test: our own claim committed, but its answer was lost
        # and the storage client's retry met it. The lease is ours: go on.)
        if claimed.is_pending and policy.is_exhausted(claimed.attempts):
            return _settled(settle_exhausted(claimed, dependencies))
        return _not_ours_to_place(claimed, dependencies)
    if clock() + timings.exchange_call > lease_until:
        # The claim took so long (storage trouble, write races) that the
        # lease could run out during the call, and a verdict or a cancel
        # would then take "unknown order" for final while it is on its way.
        # Not sent: the message comes back once the lease is over.
        logger.warning("claim outlasted its lease: not sent", extra={"order_id": order_id})
        wait_s = math.ceil((lease_until - clock()).total_seconds()) + 1
        return PlacementResult(PlacementOutcome.RETRY, claimed, retry_in_s=max(1, wait_s))
    # The receive count restarts at 1 on a message the sweep re-sent; the
    # attempts stored on the order do not, so the larger of both counts.
    return _attempt(claimed, max(receive_count, claimed.attempts + 1), dependencies)


def _attempt(claimed: Order, attempt: int, dependencies: Dependencies) -> PlacementResult:
    repository, clock = dependencies.orders, dependencies.clock
    try:
        ack = dependencies.exchange.place(claimed)
    except ExchangeRejected as exc:
        # The original was done first (too late): unlike other rejections, final also for a
        # replacement the client canceled meanwhile, which the exchange then never held.
        too_late = isinstance(exc, ReplaceTooLate)
        reason = str(exc) if too_late else f"rejected by the exchange: {exc}"

        def refused(order: Order) -> Order:
            return replacement_rejected(order, reason, clock()) if too_late else _failed(order, reason, clock())

        if claimed.attempts > 0:
            # An earlier attempt went unanswered and may have been accepted: a
            # venue that checks terms (or the original) before duplicates
            # rejects the copy of a live order. Its earlier sends can no longer
            # land (their leases are over), so its status is final now.
            return _rejected_after_unanswered(claimed, attempt, refused, dependencies)
        rejected, _ = write_with_retries(repository, claimed, refused)
        return _settled_or(PlacementOutcome.REJECTED, rejected)
    except ExchangeUnavailable as exc:
        return _unanswered(claimed, attempt, str(exc), dependencies)
    placed, _ = write_with_retries(repository, claimed, lambda o: o.placed(ack.exchange_order_id, clock()))
    if placed.status is OrderStatus.FAILED:
        # Marked failed meanwhile (an operator, or an exchange's wrong
        # "unknown order"), yet accepted: the exchange's word wins.
        accepted = VenueOrderState(ack.exchange_order_id, OrderStatus.PLACED, 0, claimed.terms.quantity, None)
        corrected, _ = write_with_retries(repository, placed, lambda o: o.placement_confirmed(accepted, clock()))
        if corrected.is_corrected_from(placed):
            log_correction(placed, corrected, "placement answer")
            return PlacementResult(PlacementOutcome.PLACED, corrected, corrected=True)
    if placed.status is OrderStatus.CANCELED and placed.placed_at is None:
        # Its lease ran out and the client canceled it while this attempt got
        # through: the exchange holds an order we show as done. A human must look.
        logger.error(
            "exchange accepted an order already marked done",
            extra={"order_id": claimed.id, "exchange_order_id": ack.exchange_order_id, "status": placed.status.value},
        )
    return PlacementResult(PlacementOutcome.PLACED, placed)


def _unanswered(claimed: Order, attempt: int, error: str, dependencies: Dependencies) -> PlacementResult:
    """An attempt without a verdict: retried after a backoff, or, the last one, settled by the exchange's status."""
    clock, policy = dependencies.clock, dependencies.retry_policy
    if policy.is_last(attempt):
        return _last_attempt_unanswered(claimed, attempt, error, dependencies)
    delay = policy.delay_after(attempt, dependencies.jitter)
    # The message comes back after delay; only well after that is the
    # order stuck, so the sweep does not send a second message meanwhile.
    retrying, _ = write_with_retries(
        dependencies.orders,
        claimed,
        lambda o: o.attempt_failed(error, clock(), attempt),
        sweep_after=lambda: clock() + timedelta(seconds=delay) + dependencies.timings.pending_sweep_after,
    )
    if not retrying.is_pending:
        return PlacementResult(PlacementOutcome.ALREADY_SETTLED, retrying)
    return PlacementResult(PlacementOutcome.RETRY, retrying, retry_in_s=delay)


def _rejected_after_unanswered(
    claimed: Order, attempt: int, refused: Callable[[Order], Order], dependencies: Dependencies
) -> PlacementResult:
    """A refusal after unanswered attempts: placed if the exchange holds the order after all, else `refused`."""
    clock = dependencies.clock
    try:
        venue = venue_status(claimed, dependencies)
    except ExchangeUnavailable as exc:
        # Not knowing whether an earlier attempt landed: a guess either way, so
        # this counts as an attempt without an answer (retried, then the verdict).
        return _unanswered(claimed, attempt, f"rejected; order status query: {exc}", dependencies)
    if venue is not None:
        placed, _ = write_with_retries(dependencies.orders, claimed, lambda o: o.placement_confirmed(venue, clock()))
        return PlacementResult(PlacementOutcome.PLACED, placed)
    rejected, _ = write_with_retries(dependencies.orders, claimed, refused)
    return _settled_or(PlacementOutcome.REJECTED, rejected)


def _last_attempt_unanswered(claimed: Order, attempt: int, error: str, dependencies: Dependencies) -> PlacementResult:
    """No answer on the last attempt: not a verdict (an earlier attempt may have got through), so ask the exchange."""
    clock, sweep_after = dependencies.clock, dependencies.timings.pending_sweep_after
    quiet_at = claimed.placement_quiet_at or clock()
    exhausted, _ = write_with_retries(
        dependencies.orders,
        claimed,
        lambda o: o.attempt_failed(error, clock(), attempt),
        # The sweep covers a lost "ask again" message, well after it was due.
        sweep_after=lambda: max(quiet_at, clock()) + sweep_after,
    )
    if not exhausted.is_pending:
        return _settled_or(PlacementOutcome.ALREADY_SETTLED, exhausted)
    return _settled(settle_exhausted(exhausted, dependencies))


def _settled(settlement: Settlement) -> PlacementResult:
    outcome = {
        Verdict.PLACED: PlacementOutcome.PLACED,
        Verdict.FAILED: PlacementOutcome.FAILED,
        Verdict.SETTLED: PlacementOutcome.ALREADY_SETTLED,
        Verdict.ASK_LATER: PlacementOutcome.AWAITING_VERDICT,
    }[settlement.verdict]
    return PlacementResult(outcome, settlement.order, retry_in_s=settlement.ask_again_in_s)


def _not_ours_to_place(order: Order, dependencies: Dependencies) -> PlacementResult:
    if order.is_pending:
        # Pending with a live lease: another delivery is at the exchange with
        # it. Dropping this message is safe: if that worker dies, the lease
        # runs out and the sweep sends a new message.
        return PlacementResult(PlacementOutcome.IN_FLIGHT, order)
    if order.known_to_exchange:
        # Execution reports arrived first: the exchange has the order, so
        # record its placement (Order.placed decides whether that still
        # applies) without asking the exchange again.
        clock: Clock = dependencies.clock
        order, _ = write_with_retries(dependencies.orders, order, lambda o: o.placed(None, clock()))
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
