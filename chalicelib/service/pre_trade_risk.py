"""The pre-trade risk check of a new order: the account's limits, the venue's reference price, its open orders.

Cheapest first: quantity and a limit order's notional need only the
account's limits (cached, CachedAccountLimits); a market or stop order's
notional needs the venue's reference price (cached a minute per instrument); the
open-orders count is one small Query (adapters/open_orders.py), asked last.
"""

from __future__ import annotations

from chalicelib.domain.model import OrderTerms
from chalicelib.domain.risk import (
    RiskLimits,
    check_notional,
    check_open_orders,
    check_quantity,
    needs_reference_price,
)
from chalicelib.service.dependencies import Dependencies


def limits_of(account_id: str, dependencies: Dependencies) -> RiskLimits:
    """The limits in force for the account: what the operator set, else the defaults."""
    risk = dependencies.risk
    return risk.account_limits.get(account_id).over(risk.defaults)


def check_order_size(account_id: str, terms: OrderTerms, dependencies: Dependencies) -> RiskLimits:
    """Nothing if the order's quantity and notional are within the account's limits (then: the limits).

    The checks a replacement gets too: it takes its original's place among
    the open orders, so the open-orders count is a new order's alone.
    """
    limits = limits_of(account_id, dependencies)
    check_quantity(terms, limits)
    reference_price = None
    if needs_reference_price(terms):
        reference_price = dependencies.risk.reference_prices.price_of(terms.instrument)
    check_notional(terms, limits, reference_price)
    return limits


def check_new_order(account_id: str, terms: OrderTerms, dependencies: Dependencies) -> None:
    """Nothing if the order is within the account's limits.

    Raises RiskLimitExceeded (naming the limit), ReferencePriceUnavailable (a
    market or stop order that cannot be valued: refused, fail closed) or
    StorageUnavailable (limits or open orders unreadable: refused too).
    """
    limits = check_order_size(account_id, terms, dependencies)
    # Counting up to the limit says whether one more fits: a larger count changes nothing.
    open_orders = dependencies.orders.count_open(account_id, stop_at=limits.max_open_orders)
    check_open_orders(open_orders, limits)
