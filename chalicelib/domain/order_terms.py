"""What a client asks for in an order (type, side, prices, time in force, expiry) and which terms go together; pure.

The rules here are the ones every way of stating terms must keep (a new
order's body today, a replace's tomorrow): which prices an order type takes,
which time in force it may have, when an expiry is allowed. The request
models turn each problem into a 422 naming its field.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    # Rests unseen until the market reaches stop_price, then works as a market
    # order (stop) or as a limit order at limit_price (stop_limit).
    STOP = "stop"
    STOP_LIMIT = "stop_limit"

    @property
    def takes_limit_price(self) -> bool:
        return self in _LIMIT_PRICED

    @property
    def takes_stop_price(self) -> bool:
        return self in _STOP_PRICED


_LIMIT_PRICED = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT})
_STOP_PRICED = frozenset({OrderType.STOP, OrderType.STOP_LIMIT})


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class TimeInForce(StrEnum):
    """How long an order works (FIX TimeInForce, tag 59)."""

    DAY = "day"  # until the exchange's session close
    GTC = "gtc"  # good till canceled
    IOC = "ioc"  # immediate or cancel: what fills at once, the rest canceled
    FOK = "fok"  # fill or kill: all at once, or canceled with no fill
    GTD = "gtd"  # good till date: until expires_at

    @property
    def is_immediate(self) -> bool:
        return self in _IMMEDIATE


_IMMEDIATE = frozenset({TimeInForce.IOC, TimeInForce.FOK})

# How far ahead a gtd order may expire: as far as brokers commonly keep one
# (Alpaca and IBKR cap good-till orders at 90 days), and a bound on how long
# an order the client may have forgotten stays at the exchange.
MAX_EXPIRY_AHEAD = timedelta(days=90)


@dataclass(frozen=True)
class OrderTerms:
    """What a client asks for; already validated at the edge (see terms_problems)."""

    type: OrderType
    side: Side
    instrument: str
    quantity: int
    limit_price: Decimal | None
    client_order_id: str | None = None
    # Orders stored before time in force existed read as day, as the exchange took them.
    time_in_force: TimeInForce = TimeInForce.DAY
    expires_at: datetime | None = None  # aware, UTC; set only for gtd
    stop_price: Decimal | None = None  # set only for stop and stop_limit

    def to_the_second(self) -> OrderTerms:
        """The terms as an order keeps them: expires_at to the whole second, as the exchange takes it.

        A fraction is dropped (the order expires a little early, never late), so that the echo, the
        stored order, an idempotent replay and the exchange all hold the same time.
        """
        if self.expires_at is None or not self.expires_at.microsecond:
            return self
        return replace(self, expires_at=self.expires_at.replace(microsecond=0))


@dataclass(frozen=True)
class TermsProblem:
    """Terms that do not go together, named by the field the client would change."""

    field: str
    message: str


def price_problems(order_type: OrderType, has_limit_price: bool, has_stop_price: bool) -> list[TermsProblem]:
    """Which of limit_price and stop_price the order type needs or refuses."""
    problems = []
    if order_type.takes_limit_price and not has_limit_price:
        problems.append(TermsProblem("limit_price", f"limit_price is required for type {order_type}"))
    if not order_type.takes_limit_price and has_limit_price:
        problems.append(TermsProblem("limit_price", f"limit_price must be absent or null for type {order_type}"))
    if order_type.takes_stop_price and not has_stop_price:
        problems.append(TermsProblem("stop_price", f"stop_price is required for type {order_type}"))
    if not order_type.takes_stop_price and has_stop_price:
        problems.append(TermsProblem("stop_price", f"stop_price must be absent or null for type {order_type}"))
    return problems


def time_in_force_problems(
    order_type: OrderType | None, time_in_force: TimeInForce, has_expiry: bool
) -> list[TermsProblem]:
    """Whether the time in force suits the order type (None: not known yet) and has the expiry it needs."""
    problems = []
    if time_in_force is TimeInForce.GTD and not has_expiry:
        problems.append(TermsProblem("expires_at", "expires_at is required for time_in_force gtd"))
    if time_in_force is not TimeInForce.GTD and has_expiry:
        problems.append(
            TermsProblem("expires_at", f"expires_at must be absent or null for time_in_force {time_in_force}")
        )
    if order_type is not None and order_type.takes_stop_price and time_in_force.is_immediate:
        # An immediate order is decided on arrival; a stop order waits for its
        # trigger, so the two cannot both hold.
        problems.append(
            TermsProblem(
                "time_in_force",
                f"time_in_force {time_in_force} cannot be used with type {order_type}: a stop order waits for"
                " its trigger, ioc and fok do not wait",
            )
        )
    return problems


def expiry_problem(expires_at: datetime, now: datetime) -> str | None:
    """Why a gtd order cannot expire at expires_at (aware) as seen at now, or None."""
    if expires_at <= now:
        return "expires_at must be in the future"
    if expires_at - now > MAX_EXPIRY_AHEAD:
        return f"expires_at must be at most {MAX_EXPIRY_AHEAD.days} days ahead"
    return None


class ExpiryRefused(Exception):
    """A gtd order's expires_at is past, or too far ahead, when the order is created: refused (HTTP 422)."""

    field = "expires_at"


def check_expiry(terms: OrderTerms, now: datetime) -> None:
    """Nothing unless the terms' expires_at is past or too far ahead at now: ExpiryRefused (naming why) then.

    The expiry as the client sent it, fraction and all: "09:30:00.500Z" sent at 09:30:00.1 is
    in the future, though the order keeps 09:30:00 (to_the_second) and so expires on arrival.
    The clock decides, so this is the create's check, not the request parser's: a retry of a
    gtd order whose expiry has passed since must still get its order back.
    """
    problem = None if terms.expires_at is None else expiry_problem(terms.expires_at, now)
    if problem:
        raise ExpiryRefused(problem)
