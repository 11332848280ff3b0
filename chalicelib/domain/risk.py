"""Pre-trade risk limits of an account and the check of an order against them; pure, no I/O.

Each account may have its own limits (set by the operator, `python -m ops
accounts limits`); a limit it has not set is the default from settings. An
order over a limit is refused before it is stored, with a message naming
the limit, its value and the order's value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal

from chalicelib.domain.order_terms import OrderTerms

MAX_ORDER_NOTIONAL = "max_order_notional"
MAX_OPEN_ORDERS = "max_open_orders"
MAX_ORDER_QUANTITY = "max_order_quantity"
LIMIT_NAMES = (MAX_ORDER_NOTIONAL, MAX_OPEN_ORDERS, MAX_ORDER_QUANTITY)


@dataclass(frozen=True)
class RiskLimits:
    """The limits one account's orders are checked against, every one of them set."""

    # The most one order may be worth: limit price (market: the venue's reference price; stop: the higher
    # of that and the stop price) x quantity, in the instrument's price currency.
    max_order_notional: Decimal
    # The most orders the account may have open (pending to pending_cancel) at once; 0 stops new orders.
    max_open_orders: int
    # The most shares one order may ask for.
    max_order_quantity: int


@dataclass(frozen=True)
class AccountLimits:
    """What the operator set for one account; None = the default applies."""

    max_order_notional: Decimal | None = None
    max_open_orders: int | None = None
    max_order_quantity: int | None = None

    def over(self, defaults: RiskLimits) -> RiskLimits:
        """The limits in force: each one set here, else its default."""
        return RiskLimits(
            **{
                name: default if (mine := getattr(self, name)) is None else mine
                for name, default in dataclasses.asdict(defaults).items()
            }
        )

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in LIMIT_NAMES)


class InvalidLimit(ValueError):
    """A limit value the operator may not set (the message names the limit)."""


def validated(limits: AccountLimits, quantity_bound: int) -> AccountLimits:
    """The limits if each given one is a value the operator may set, else InvalidLimit naming it.

    quantity_bound: the request model's hard bound on quantity (MAX_ORDER_QUANTITY); an account
    limit above it could never take effect, so setting one is refused rather than misleading.
    """
    notional, open_orders, quantity = limits.max_order_notional, limits.max_open_orders, limits.max_order_quantity
    if notional is not None and (not notional.is_finite() or notional <= 0 or notional.adjusted() > 18):
        raise InvalidLimit(f"{MAX_ORDER_NOTIONAL} must be a number above 0 and below 10^19, got {notional}")
    if open_orders is not None and not 0 <= open_orders <= 10_000_000:
        raise InvalidLimit(f"{MAX_OPEN_ORDERS} must be a whole number from 0 to 10000000, got {open_orders}")
    if quantity is not None and not 1 <= quantity <= quantity_bound:
        raise InvalidLimit(
            f"{MAX_ORDER_QUANTITY} must be a whole number from 1 to {quantity_bound} "
            f"(MAX_ORDER_QUANTITY, the bound on every order), got {quantity}"
        )
    return limits


class RiskLimitExceeded(Exception):
    """The order would break one of the account's limits: refused (HTTP 422), nothing stored."""

    def __init__(self, limit: str, limit_value: object, order_value: str, field: str) -> None:
        super().__init__(
            f"Order refused by a pre-trade risk limit: {order_value} exceeds the account's {limit} of {limit_value}"
        )
        self.limit = limit
        self.limit_value = limit_value
        self.field = field  # the request field the client would change: "quantity", or "body"


def check_quantity(terms: OrderTerms, limits: RiskLimits) -> None:
    if terms.quantity > limits.max_order_quantity:
        raise RiskLimitExceeded(MAX_ORDER_QUANTITY, limits.max_order_quantity, f"quantity {terms.quantity}", "quantity")


def needs_reference_price(terms: OrderTerms) -> bool:
    """Whether the order's notional is valued at the venue's reference price (orders without a limit price)."""
    return not terms.type.takes_limit_price


def check_notional(terms: OrderTerms, limits: RiskLimits, reference_price: Decimal | None = None) -> None:
    """Limit and stop-limit orders at their limit price; market and stop orders need the reference price.

    A stop-limit order never fills beyond its limit, so the limit bounds it as
    it bounds a limit order. A stop order is a market order once triggered and
    fills at whatever the market then pays: a buy stop triggers when the price
    rises to the stop (and may fill above it), so the stop price is its likely
    price; a sell stop triggers on a fall to the stop, below today's reference
    price. The higher of the two is never below either estimate, so neither
    side's stop order is valued lower than the price it may fill at.
    """
    if terms.type.takes_limit_price:
        if terms.limit_price is None:
            raise ValueError(f"a {terms.type} order without a limit price")
        price, priced_by = terms.limit_price, f"limit_price {terms.limit_price}"
    else:
        if reference_price is None:
            raise ValueError(f"a {terms.type} order's notional needs the reference price")
        price, priced_by = reference_price, f"reference price {reference_price} of {terms.instrument}"
        if terms.stop_price is not None and terms.stop_price > reference_price:
            price, priced_by = terms.stop_price, f"stop_price {terms.stop_price}"
    notional = price * terms.quantity
    if notional > limits.max_order_notional:
        raise RiskLimitExceeded(
            MAX_ORDER_NOTIONAL,
            limits.max_order_notional,
            f"notional {notional} ({priced_by} x quantity {terms.quantity})",
            "quantity",
        )


def check_open_orders(open_orders: int, limits: RiskLimits) -> None:
    """open_orders: the account's open orders before this one (counted up to the limit, so at least that many)."""
    if open_orders >= limits.max_open_orders:
        raise RiskLimitExceeded(
            MAX_OPEN_ORDERS,
            limits.max_open_orders,
            f"{open_orders} open orders plus this one",
            "body",
        )
