"""Our orders compared with the exchange's, and repaired: the scheduled reconciler (FIX's order status request).

Execution reports are how the exchange's state reaches us, but one can be
lost for good (beyond the feed's replay window, a checkpoint skipped by an
operator's error) and a placement's answer can be lost after the exchange
accepted. Each run asks the exchange about a bounded slice of the orders
that can still change (open ones, and failed ones for a while, which the
exchange may hold after all), from where the last run stopped, and merges
each answer exactly as it merges reports: statuses only move forward, fills
only grow, so a stale answer never undoes a newer report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from chalicelib.adapters.exchange import ExchangeUnavailable
from chalicelib.adapters.repository import ReconcileCursor
from chalicelib.domain.model import Order, OrderStatus
from chalicelib.domain.plausibility import venue_state_problem
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.order_writes import write_with_retries
from chalicelib.service.replace_ends import release_original

logger = logging.getLogger(__name__)


class Check(StrEnum):
    """What one order's comparison with the exchange came to."""

    AGREES = "agrees"
    REPAIRED = "repaired"  # the exchange knew more: merged
    CORRECTED = "corrected"  # we had it failed, the exchange holds it: moved to the exchange's state
    UNKNOWN_AT_EXCHANGE = "unknown_at_exchange"  # open with us, unknown there: nothing to merge, a human looks
    UNAVAILABLE = "unavailable"  # the exchange could not be asked: the next pass asks again
    IMPLAUSIBLE = "implausible"  # the answer cannot be true of the order: not merged, logged as an error
    ERROR = "error"  # our storage failed us for this order: the next pass tries again
    DROPPED = "dropped"  # failed longer than the window: no longer compared
    SKIPPED = "skipped"  # done meanwhile (the index lags the table)
    SETTLING = "settling"  # changed moments ago, its reports may be on their way: a later pass asks


@dataclass
class ReconcileRun:
    checks: dict[Check, int] = field(default_factory=lambda: dict.fromkeys(Check, 0))
    cursor: ReconcileCursor | None = None

    @property
    def checked(self) -> int:
        """Orders the exchange was asked about."""
        asked = (
            Check.AGREES,
            Check.REPAIRED,
            Check.CORRECTED,
            Check.UNKNOWN_AT_EXCHANGE,
            Check.UNAVAILABLE,
            Check.IMPLAUSIBLE,
        )
        return sum(self.checks[check] for check in asked)

    @property
    def repaired(self) -> int:
        return self.checks[Check.REPAIRED] + self.checks[Check.CORRECTED]


def reconcile_orders(
    dependencies: Dependencies,
    limit: int,
    failed_window: timedelta,
    executor: Executor | None = None,
    time_left: Callable[[], bool] = lambda: True,
    settle: timedelta = timedelta(0),
) -> ReconcileRun:
    """One run: at most `limit` orders from the saved cursor on, each compared and repaired; the cursor moved on.

    time_left() is asked before each order: once it says no, the orders not
    started yet are left, and the cursor is saved right after the last one
    started (they start in cursor order), so a slow exchange shortens runs
    instead of failing them all at the function's timeout.
    """
    store = dependencies.reconciler_cursor
    saved = store.load()
    cursor = ReconcileCursor.from_text(saved) if saved else None
    due, next_cursor = dependencies.orders.due_for_reconcile(cursor, limit)
    orders = dependencies.orders.get_many([str(p.after_id) for p in due]) if due else {}

    def check(position: ReconcileCursor) -> Check | None:
        if not time_left():
            return None
        order = orders.get(str(position.after_id))
        if order is None:
            return Check.SKIPPED  # the index lags the table
        try:
            return reconcile_order(order, dependencies, failed_window, settle)
        except Exception as exc:  # one order's trouble must not stop the others, nor the cursor
            logger.warning("order not reconciled", extra={"order_id": order.id, "error": repr(exc)})
            return Check.ERROR

    # A thread pool starts its tasks in order: the ones left out are a tail.
    outcomes = list(executor.map(check, due) if executor is not None and len(due) > 1 else map(check, due))
    done = [outcome for outcome in outcomes if outcome is not None]
    if len(done) < len(due):
        next_cursor = due[len(done) - 1] if done else cursor or ReconcileCursor(0, None)
    run = ReconcileRun(cursor=next_cursor)
    for outcome in done:
        run.checks[outcome] += 1
    # Saved last: a run that dies before this is repeated from the same place,
    # which only checks those orders again.
    store.save(next_cursor.to_text())
    return run


def reconcile_order(
    order: Order, dependencies: Dependencies, failed_window: timedelta, settle: timedelta = timedelta(0)
) -> Check:
    """Compare one order with the exchange's status of it and merge the difference.

    Not an order that changed within `settle`: the reports of what the exchange
    did just now are likely still on their way, and merging its status first
    would record a fill without the report that says at what price and when.
    """
    now = dependencies.clock()
    if order.status is OrderStatus.FAILED and order.updated_at < now - failed_window:
        dependencies.orders.stop_reconciling(order)
        return Check.DROPPED
    if order.is_terminal and order.status is not OrderStatus.FAILED:
        return Check.SKIPPED
    # pending_replace, or pending_cancel with a replace under way: both name their replacement.
    if order.replaced_by is not None and release_if_replacement_ended(order, dependencies):
        return Check.REPAIRED
    if order.updated_at > now - settle:
        return Check.SETTLING
    try:
        venue = dependencies.exchange.status(order.id)
    except ExchangeUnavailable as exc:
        logger.warning("exchange status unavailable", extra={"order_id": order.id, "error": str(exc)})
        return Check.UNAVAILABLE
    if venue is None:
        if order.known_to_exchange or order.placed_at is not None:
            # We hold an exchange's answer for it, yet it says it never had
            # it: no merge can settle that, a human must.
            logger.error(
                "open order unknown at the exchange",
                extra={"order_id": order.id, "correlation_id": order.correlation_id, "status": order.status.value},
            )
            return Check.UNKNOWN_AT_EXCHANGE
        return Check.AGREES  # never placed (pending, or failed): the placement path owns it
    problem = venue_state_problem(order, venue)
    if problem:
        # Merging it would stay for good (fills only grow): the order is left
        # as it is, and the next pass asks again.
        logger.error(
            "implausible exchange status not merged",
            extra={"order_id": order.id, "correlation_id": order.correlation_id, "reason": problem},
        )
        return Check.IMPLAUSIBLE
    clock = dependencies.clock
    merged, written = write_with_retries(dependencies.orders, order, lambda o: o.placement_confirmed(venue, clock()))
    if not written:
        return Check.AGREES
    if merged.is_corrected_from(order):
        log_correction(order, merged, "reconciler")
        return Check.CORRECTED
    logger.warning(
        "order repaired from the exchange's status",
        extra={
            "order_id": order.id,
            "correlation_id": order.correlation_id,
            "status": merged.status.value,
            "filled_quantity": merged.filled_quantity,
            "was": {"status": order.status.value, "filled_quantity": order.filled_quantity},
        },
    )
    return Check.REPAIRED


def release_if_replacement_ended(original: Order, dependencies: Dependencies) -> bool:
    """The safety net under release_original: an open order naming a replacement that ended without the
    exchange (its release lost: a storage error or a crash after the replacement's last write) works on; True
    if so. The exchange's status cannot tell: it shows the original open, which pending_replace already is."""
    replacement = dependencies.orders.get(original.replaced_by) if original.replaced_by else None
    if replacement is None or not release_original(replacement, dependencies):
        return False
    logger.warning("pending replace released by the reconciler", extra={"order_id": original.id})
    return True


def log_correction(before: Order, after: Order, by: str) -> None:
    """An order we told the client had failed is live at the exchange: logged as an error for an operator."""
    logger.error(
        "failed order corrected to the exchange's state",
        extra={
            "order_id": after.id,
            "correlation_id": after.correlation_id,
            "status": after.status.value,
            "filled_quantity": after.filled_quantity,
            "exchange_order_id": after.exchange_order_id,
            "was": before.status.value,
            "by": by,
        },
    )
