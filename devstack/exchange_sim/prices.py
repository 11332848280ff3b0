"""The market stop orders watch: a price path per instrument, and the stops waiting for theirs to be reached.

Each instrument's path starts at its reference price (fill_plans.reference_price) and walks
at random, a step every price_tick_s of at most price_step_bps either way, from a seeded
stream; a harness can also set it (POST /admin/prices/{instrument}). A buy stop triggers
when the price is at or above its stop price (reached from below), a sell stop when it is
at or below it (reached from above). Nothing here is thread-safe: the exchange calls it
under its own lock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from devstack.exchange_sim.config import InvalidValue, finite_number
from devstack.exchange_sim.fill_plans import CENT, reference_price

BASIS_POINTS = 10000


@dataclass(frozen=True)
class PendingStop:
    """A stop order the venue acknowledged and is watching the price for."""

    client_order_id: str
    instrument: str
    side: str
    stop_price: Decimal


def stop_reached(side: str, stop_price: Decimal, price: Decimal) -> bool:
    return price >= stop_price if side == "buy" else price <= stop_price


def as_price(value: object, name: str = "price") -> Decimal:
    """A price as the venue prints it: a positive JSON number with at most two decimals; InvalidValue otherwise."""
    number = finite_number(value, name)
    # repr of a float is its shortest exact-looking form: 187.25 -> Decimal("187.25").
    price = Decimal(repr(number))
    if price <= 0:
        raise InvalidValue(f"{name} must be positive, got {value!r}")
    try:
        on_the_cent = price.quantize(CENT)
    except InvalidOperation:  # more digits than the decimal context's 28: a price no venue prints
        raise InvalidValue(f"{name} is too large, got {value!r}") from None
    if price != on_the_cent:
        raise InvalidValue(f"{name} must have at most 2 decimals, got {value!r}")
    return on_the_cent


class Market:
    """Current prices of the instruments anyone asked about, and the untriggered stops on them."""

    def __init__(self) -> None:
        self._prices: dict[str, Decimal] = {}
        self._stops: dict[str, PendingStop] = {}

    def price(self, instrument: str) -> Decimal:
        """The instrument's current price; its path starts (at the reference price) when first asked for."""
        return self._prices.setdefault(instrument, reference_price(instrument))

    def set_price(self, instrument: str, price: Decimal) -> None:
        self._prices[instrument] = price

    def step(self, rng: random.Random, step_bps: int) -> None:
        """One tick: every path moves by a whole number of basis points in [-step_bps, step_bps], to the cent."""
        # Sorted, so that a seed gives every instrument the same walk whatever order they came in.
        for instrument in sorted(self._prices):
            moved_bps = rng.randint(-step_bps, step_bps)
            price = self._prices[instrument] * (BASIS_POINTS + moved_bps) / BASIS_POINTS
            self._prices[instrument] = max(CENT, price.quantize(CENT, rounding=ROUND_HALF_EVEN))

    def watch(self, stop: PendingStop) -> None:
        self.price(stop.instrument)
        self._stops[stop.client_order_id] = stop

    def forget(self, client_order_id: str) -> None:
        self._stops.pop(client_order_id, None)

    def watching(self, client_order_id: str) -> bool:
        return client_order_id in self._stops

    def reached(self, client_order_id: str | None = None) -> list[tuple[PendingStop, Decimal]]:
        """The stops (of all, or just this one) whose price is reached, with that price; they are watched no more."""
        # In the order they came to be watched (acknowledged), the way a venue's book queues them.
        ids = list(self._stops) if client_order_id is None else [client_order_id]
        triggered = []
        for stop_id in ids:
            stop = self._stops.get(stop_id)
            if stop is None:
                continue
            price = self.price(stop.instrument)
            if stop_reached(stop.side, stop.stop_price, price):
                del self._stops[stop_id]
                triggered.append((stop, price))
        return triggered

    def clear(self) -> None:
        """Forget every path (they start again at the reference price) and every stop."""
        self._prices.clear()
        self._stops.clear()
