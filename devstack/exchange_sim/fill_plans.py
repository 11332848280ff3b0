"""Working an accepted order: the plan of its execution reports, drawn at once, and the state they describe."""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

from devstack.exchange_sim.config import SimConfig
from devstack.exchange_sim.orders import OrderRequest

# Each step of working an order waits exec_delay_s times a factor from this range, so
# reports of concurrent orders interleave the way they do on a real venue.
JITTER_RANGE = (0.5, 1.5)
# Fill prices stray at most this many basis points from the instrument's reference price.
PRICE_NOISE_BPS = 50
CENT = Decimal("0.01")
AVG_PRICE_STEP = Decimal("0.0001")

TERMINAL_EXEC_TYPES = frozenset({"fill", "canceled", "rejected", "expired"})
STATUS_OF_EXEC_TYPE = {
    "new": "new",
    "partial_fill": "partially_filled",
    "fill": "filled",
    "canceled": "canceled",
    "rejected": "rejected",
    "expired": "expired",
}


@dataclass(frozen=True)
class Step:
    """One execution report to emit, delay_s after the previous step of the same order."""

    delay_s: float
    exec_type: str
    last_qty: int = 0
    last_price: Decimal | None = None


def reference_price(instrument: str) -> Decimal:
    """A price between 10.00 and 500.00 that is the same for an instrument in every run."""
    # Not hash(): string hashing is salted per process, and runs must agree.
    digest = hashlib.sha256(instrument.encode()).digest()
    cents = 1000 + int.from_bytes(digest[:8], "big") % 49001
    return Decimal(cents) * CENT


def _limit(order: OrderRequest) -> Decimal | None:
    """The worst price a fill may have, in whole cents: never beyond the client's limit."""
    if order.limit_price is None:
        return None
    # repr of a float is its shortest exact-looking form: 187.25 -> Decimal("187.25").
    limit = Decimal(repr(order.limit_price))
    return limit.quantize(CENT, rounding=ROUND_FLOOR if order.side == "buy" else ROUND_CEILING)


def _fill_price(order: OrderRequest, reference: Decimal, rng: random.Random) -> Decimal:
    noise_bps = rng.randint(-PRICE_NOISE_BPS, PRICE_NOISE_BPS)
    price = (reference * (10000 + noise_bps) / 10000).quantize(CENT, rounding=ROUND_HALF_EVEN)
    limit = _limit(order)
    if limit is not None:
        # A limit the market is beyond fills at the limit itself: never worse for the client.
        price = min(price, limit) if order.side == "buy" else max(price, limit)
    return price


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """`parts` positive integers that add up to `total` (parts <= total)."""
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    bounds = [0, *cuts, total]
    return [high - low for low, high in itertools.pairwise(bounds)]


def plan_execution(order: OrderRequest, config: SimConfig, rng: random.Random) -> list[Step]:
    """Every report an accepted order will get, drawn at once so that a seed decides all of it.

    Market orders fill completely in 1..max_partial_fills executions. Limit orders rest
    until they expire, fill partly and then expire, or fill completely, one third each.
    Any order may instead be rejected (a lone `rejected`) or canceled by the venue after
    1..max_partial_fills partial fills.
    """

    def jitter() -> float:
        return rng.uniform(*JITTER_RANGE) * config.exec_delay_s

    # The same draws in the same order whatever the outcome, so that changing one rate
    # does not shift the random stream of everything after it.
    rejected = rng.random() < config.reject_rate
    canceled = rng.random() < config.cancel_rate
    limit_outcome = rng.choice(("rest", "partial", "fill"))
    if rejected:
        return [Step(jitter(), "rejected")]

    quantity = order.quantity
    limit = _limit(order)
    if canceled:
        outcome = "cancel"
    elif order.type == "market":
        outcome = "fill"
    elif limit is not None and limit < CENT:
        # A buy limit under one cent cannot be met by any price the exchange prints.
        outcome = "rest"
    else:
        outcome = limit_outcome

    if outcome == "fill":
        sizes = _split(quantity, rng.randint(1, min(config.max_partial_fills, quantity)), rng)
    elif outcome in ("partial", "cancel") and quantity > 1:
        count = rng.randint(1, min(config.max_partial_fills, quantity - 1))
        sizes = _split(rng.randint(count, quantity - 1), count, rng)
    else:
        sizes = []

    reference = reference_price(order.instrument)
    steps = [Step(jitter(), "new")]
    for index, size in enumerate(sizes):
        exec_type = "fill" if outcome == "fill" and index == len(sizes) - 1 else "partial_fill"
        steps.append(Step(jitter(), exec_type, size, _fill_price(order, reference, rng)))
    if outcome == "cancel":
        steps.append(Step(jitter(), "canceled"))
    elif outcome in ("rest", "partial"):
        # The TTL runs from `new`; fills that took longer than that still come first.
        since_new = sum(step.delay_s for step in steps[1:])
        steps.append(Step(max(jitter(), config.limit_ttl_s - since_new), "expired"))
    return steps


@dataclass
class Execution:
    """An order's state as its execution reports so far describe it, the lost ones included."""

    quantity: int
    last_exec_type: str = "new"
    cum_qty: int = 0
    notional: Decimal = Decimal(0)
    # The reports the feed carries, and the ones the feed-loss knob dropped: both changed the
    # order at the exchange, but only the first can ever reach a consumer.
    exec_ids: list[str] = field(default_factory=list)
    lost_exec_ids: list[str] = field(default_factory=list)
    transact_time: str | None = None

    @property
    def done(self) -> bool:
        return self.last_exec_type in TERMINAL_EXEC_TYPES

    @property
    def status(self) -> str:
        return STATUS_OF_EXEC_TYPE[self.last_exec_type]

    @property
    def leaves_qty(self) -> int:
        return 0 if self.done else self.quantity - self.cum_qty

    def avg_price(self) -> str | None:
        if self.cum_qty == 0:
            return None
        return str((self.notional / self.cum_qty).quantize(AVG_PRICE_STEP, rounding=ROUND_HALF_EVEN))

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "cum_qty": self.cum_qty,
            "leaves_qty": self.leaves_qty,
            "avg_price": self.avg_price(),
            "exec_ids": list(self.exec_ids),
            "done": self.done,
        }
