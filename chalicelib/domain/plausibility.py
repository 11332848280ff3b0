"""Whether what the exchange says about an order can be true of that order; pure, no I/O.

The venue is outside our trust boundary: a report that names one of our
orders is checked against what we know of it (its quantity, its limit, the
exchange order id recorded at placement) before it may change the order. A
report that cannot be true is never merged (the merge takes the highest
cumulative quantity and price it sees, so a single bad report would stay for
good): the execution consumer quarantines it with the reason given here, and
the reconciler leaves the order as it is.

Each rule depends only on the order's terms, which never change, and on its
exchange order id, which is set once; so the verdict on a report does not
depend on the order in which the reports arrive, and merging only the
plausible ones keeps the merge idempotent and order-independent.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from chalicelib.domain.model import (
    ExecType,
    ExecutionReport,
    Order,
    OrderStatus,
    Side,
    VenueOrderState,
)

# Prices: below 10^9 with at most 8 decimal places (trailing zeros not
# counted). The dearest listed share trades in the hundreds of thousands, so
# 10^9 leaves three orders of magnitude and still fits 9 + 8 = 17 significant
# digits, what a JSON number (an IEEE double) carries without changing the
# value a client reads; 8 decimals is the finest tick any venue we would
# connect prints (sub-penny equity ticks use 4, crypto-style venues 8).
MAX_PRICE = Decimal(10) ** 9
MAX_PRICE_DECIMALS = 8
# An average is computed, not printed: a venue may send 9.9966666666667 for
# three fills. Still bounded (DynamoDB numbers hold 38 digits), never refused
# for precision a real venue gives.
MAX_AVERAGE_DECIMALS = 20

_FILLS = frozenset({ExecType.PARTIAL_FILL, ExecType.FILL})
# Reports after which nothing of the order is open any more (leaves_qty is 0).
_FINAL = frozenset({ExecType.FILL, ExecType.CANCELED, ExecType.EXPIRED, ExecType.REJECTED, ExecType.REPLACED})


def price_problem(name: str, price: Decimal, max_decimals: int = MAX_PRICE_DECIMALS) -> str | None:
    """Why price is no price a venue prints (not finite, negative, too large, too fine), or None."""
    if not price.is_finite():
        return f"{name} {price} is not a finite number"
    if price < 0:
        return f"{name} {price} is negative"
    if price >= MAX_PRICE:
        return f"{name} {price:.3e} is not below {MAX_PRICE:.0e}"
    exponent = price.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > max_decimals:
        return f"{name} {price} has more than {max_decimals} decimal places"
    return None


def _beyond_limit(order: Order, name: str, price: Decimal) -> str | None:
    """Why a fill at price would break the order's limit, or None (also for market and stop orders)."""
    limit = order.terms.limit_price
    # A stop-limit order, once triggered, is a limit order: the same bound holds.
    if not order.terms.type.takes_limit_price or limit is None:
        return None
    if order.terms.side is Side.BUY and price > limit:
        return f"{name} {price} is above the buy limit {limit}"
    if order.terms.side is Side.SELL and price < limit:
        return f"{name} {price} is below the sell limit {limit}"
    return None


def _price_problems(order: Order, last_price: Decimal | None, avg_price: Decimal | None, filled: bool) -> str | None:
    """Prices bounded; and, where they price a fill, within the limit.

    A report that fills nothing (new, canceled, expired) may carry 0 for its
    prices, as FIX venues commonly do: no limit applies to a price nobody paid.
    """
    problems: list[str | None] = []
    if last_price is not None:
        problems.append(price_problem("last_price", last_price))
        if filled:
            problems.append(_beyond_limit(order, "last_price", last_price))
    if avg_price is not None:
        problems.append(price_problem("avg_price", avg_price, MAX_AVERAGE_DECIMALS))
        # A replacement's average counts its original's fills, made within the original's limit, not its own.
        if avg_price > 0 and order.replaces is None:
            problems.append(_beyond_limit(order, "avg_price", avg_price))
    return next((problem for problem in problems if problem), None)


def _exchange_order_id_problem(order: Order, exchange_order_id: str | None) -> str | None:
    recorded = order.exchange_order_id
    if recorded is not None and exchange_order_id is not None and exchange_order_id != recorded:
        return f"exchange_order_id {exchange_order_id!r} is not the order's ({recorded!r})"
    return None


def _quantity_problem(report: ExecutionReport, quantity: int) -> str | None:
    if report.cum_qty > quantity:
        return f"cum_qty {report.cum_qty} is above the order's quantity {quantity}"
    if report.last_qty > report.cum_qty:
        return f"last_qty {report.last_qty} is above cum_qty {report.cum_qty}"
    if report.exec_type in _FINAL:
        if report.leaves_qty != 0:
            return f"leaves_qty {report.leaves_qty} on a {report.exec_type} report (nothing is open after it)"
    elif report.cum_qty + report.leaves_qty != quantity:
        return (
            f"cum_qty {report.cum_qty} + leaves_qty {report.leaves_qty} is not the order's quantity {quantity}"
            f" on a {report.exec_type} report"
        )
    if report.exec_type is ExecType.FILL and report.cum_qty != quantity:
        return f"a fill report with cum_qty {report.cum_qty} leaves part of the order's quantity {quantity} open"
    return None


def _fill_problem(report: ExecutionReport) -> str | None:
    if report.exec_type in _FILLS:
        if report.last_qty <= 0:
            return f"a {report.exec_type} report with last_qty {report.last_qty}"
        if report.last_price is None or report.last_price <= 0:
            return f"a {report.exec_type} report without a positive last_price"
    elif report.last_qty != 0:
        return f"last_qty {report.last_qty} on a {report.exec_type} report, which fills nothing"
    if report.cum_qty > 0 and (report.avg_price is None or report.avg_price <= 0):
        return f"cum_qty {report.cum_qty} without a positive avg_price"
    if report.cum_qty == 0 and report.avg_price:
        return f"avg_price {report.avg_price} with nothing filled"
    return None


def report_problem(order: Order, report: ExecutionReport) -> str | None:
    """Why report cannot be true of order, or None if it can."""
    if report.order_id != order.id:
        return f"report is for order {report.order_id}, not {order.id}"
    return (
        _exchange_order_id_problem(order, report.exchange_order_id)
        or _price_problems(order, report.last_price, report.avg_price, filled=report.exec_type in _FILLS)
        or _quantity_problem(report, order.terms.quantity)
        or _fill_problem(report)
    )


def implausible_reports(order: Order, reports: Sequence[ExecutionReport]) -> dict[ExecutionReport, str]:
    """The reports of order (one batch) that must not be applied, each with the reason.

    Besides each report on its own: where no exchange order id is recorded yet,
    the batch's reports must agree on one. If they do not, all of them are set
    aside (none of them can be told for the true one, and picking by arrival
    would make the outcome depend on the order of the reports).
    """
    problems = {report: problem for report in reports if (problem := report_problem(order, report))}
    if order.exchange_order_id is None:
        plausible = [report for report in reports if report not in problems]
        named = sorted({report.exchange_order_id for report in plausible})
        if len(named) > 1:
            reason = f"the batch names more than one exchange_order_id for the order: {', '.join(map(repr, named))}"
            problems.update(dict.fromkeys(plausible, reason))
    return problems


def venue_state_problem(order: Order, venue: VenueOrderState) -> str | None:
    """Why the exchange's status answer cannot be true of order, or None if it can."""
    quantity = order.terms.quantity
    if venue.cum_qty > quantity:
        return f"cum_qty {venue.cum_qty} is above the order's quantity {quantity}"
    if venue.cum_qty + venue.leaves_qty > quantity:
        return f"cum_qty {venue.cum_qty} + leaves_qty {venue.leaves_qty} is above the order's quantity {quantity}"
    if venue.status is OrderStatus.FILLED and venue.cum_qty != quantity:
        return f"status filled with cum_qty {venue.cum_qty} of the order's quantity {quantity}"
    if venue.cum_qty > 0 and (venue.avg_price is None or venue.avg_price <= 0):
        return f"cum_qty {venue.cum_qty} without a positive avg_price"
    return _exchange_order_id_problem(order, venue.exchange_order_id) or _price_problems(
        order, None, venue.avg_price, filled=False
    )
