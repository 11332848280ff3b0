"""Pre-trade risk limits: defaults under an account's own limits, and the check of an order against them."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from chalicelib.domain.model import OrderTerms, OrderType, Side
from chalicelib.domain.risk import (
    AccountLimits,
    InvalidLimit,
    RiskLimitExceeded,
    RiskLimits,
    check_notional,
    check_open_orders,
    check_quantity,
    needs_reference_price,
    validated,
)

pytestmark = pytest.mark.unit

DEFAULTS = RiskLimits(max_order_notional=Decimal("10000"), max_open_orders=5, max_order_quantity=100)


def limit(quantity: int, price: str) -> OrderTerms:
    return OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", quantity, Decimal(price))


def market(quantity: int) -> OrderTerms:
    return OrderTerms(OrderType.MARKET, Side.SELL, "US0378331005", quantity, None)


def test_an_account_limit_replaces_only_its_default() -> None:
    own = AccountLimits(max_open_orders=50)
    assert own.over(DEFAULTS) == RiskLimits(Decimal("10000"), 50, 100)
    assert AccountLimits().over(DEFAULTS) == DEFAULTS
    assert AccountLimits().is_empty() and not own.is_empty()


def test_a_limit_order_is_valued_at_its_limit_price() -> None:
    check_notional(limit(100, "100.00"), DEFAULTS)  # exactly at the limit: allowed
    with pytest.raises(RiskLimitExceeded) as refused:
        check_notional(limit(100, "100.01"), DEFAULTS)
    assert refused.value.limit == "max_order_notional"
    message = str(refused.value)
    assert "max_order_notional of 10000" in message
    assert "notional 10001.00" in message and "limit_price 100.01 x quantity 100" in message


def test_a_market_order_is_valued_at_the_reference_price_and_needs_one() -> None:
    check_notional(market(40), DEFAULTS, Decimal("250"))
    with pytest.raises(RiskLimitExceeded, match=r"notional 10250\.00 \(reference price 250\.00 of US0378331005"):
        check_notional(market(41), DEFAULTS, Decimal("250.00"))
    with pytest.raises(ValueError, match="reference price"):
        check_notional(market(1), DEFAULTS, None)


def test_quantity_over_the_limit_is_refused_naming_it() -> None:
    check_quantity(limit(100, "1"), DEFAULTS)
    with pytest.raises(RiskLimitExceeded, match="quantity 101 exceeds the account's max_order_quantity of 100") as r:
        check_quantity(limit(101, "1"), DEFAULTS)
    assert r.value.field == "quantity"


def test_open_orders_at_the_limit_refuse_one_more() -> None:
    check_open_orders(4, DEFAULTS)
    expected = "5 open orders plus this one exceeds the account's max_open_orders of 5"
    with pytest.raises(RiskLimitExceeded, match=expected):
        check_open_orders(5, DEFAULTS)
    with pytest.raises(RiskLimitExceeded, match="max_open_orders of 0"):
        check_open_orders(0, RiskLimits(Decimal(1), 0, 1))  # 0: the account may open none


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        (AccountLimits(max_order_notional=Decimal(0)), "max_order_notional"),
        (AccountLimits(max_order_notional=Decimal("NaN")), "max_order_notional"),
        (AccountLimits(max_order_notional=Decimal("1e19")), "max_order_notional"),
        (AccountLimits(max_open_orders=-1), "max_open_orders"),
        (AccountLimits(max_order_quantity=0), "max_order_quantity"),
        (AccountLimits(max_order_quantity=1001), "max_order_quantity"),  # above the hard bound: never applies
    ],
)
def test_values_the_operator_may_not_set_are_refused_naming_the_limit(limits: AccountLimits, named: str) -> None:
    with pytest.raises(InvalidLimit, match=named):
        validated(limits, quantity_bound=1000)


def test_values_within_bounds_pass() -> None:
    limits = AccountLimits(Decimal("1e12"), 0, 1000)
    assert validated(limits, quantity_bound=1000) is limits


def stop(quantity: int, stop_price: str, side: Side = Side.BUY) -> OrderTerms:
    return OrderTerms(OrderType.STOP, side, "US0378331005", quantity, None, stop_price=Decimal(stop_price))


def stop_limit(quantity: int, stop_price: str, limit_price: str) -> OrderTerms:
    terms = OrderTerms(OrderType.STOP_LIMIT, Side.BUY, "US0378331005", quantity, Decimal(limit_price))
    return dataclasses.replace(terms, stop_price=Decimal(stop_price))


def test_a_stop_limit_order_is_valued_at_its_limit_price_without_a_reference_price() -> None:
    assert not needs_reference_price(stop_limit(1, "90", "100"))
    check_notional(stop_limit(100, "90", "100.00"), DEFAULTS)
    with pytest.raises(RiskLimitExceeded, match=r"notional 10001\.00 \(limit_price 100\.01 x quantity 100\)"):
        check_notional(stop_limit(100, "90", "100.01"), DEFAULTS)


def test_a_stop_order_is_valued_at_the_higher_of_its_stop_and_the_reference_price() -> None:
    assert needs_reference_price(stop(1, "100"))
    # A buy stop above the market: it fills around its stop, which is the higher.
    check_notional(stop(100, "100.00"), DEFAULTS, Decimal("80"))
    with pytest.raises(RiskLimitExceeded, match=r"notional 10001\.00 \(stop_price 100\.01 x quantity 100\)"):
        check_notional(stop(100, "100.01"), DEFAULTS, Decimal("80"))
    # A sell stop below the market: valued at the reference price, the higher.
    with pytest.raises(RiskLimitExceeded, match=r"\(reference price 120 of US0378331005 x quantity 100\)"):
        check_notional(stop(100, "50.00", Side.SELL), DEFAULTS, Decimal("120"))
    with pytest.raises(ValueError, match="reference price"):
        check_notional(stop(1, "50.00"), DEFAULTS, None)
