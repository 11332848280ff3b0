"""Working an accepted order: the plan of its execution reports, drawn at once, and the state they describe."""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

from devstack.exchange_sim.config import SimConfig
from devstack.exchange_sim.orders import STOP_TYPES, OrderRequest
from devstack.exchange_sim.time_in_force import Lifetime

# Each step of working an order waits exec_delay_s times a factor from this range, so
# reports of concurrent orders interleave the way they do on a real venue.
JITTER_RANGE = (0.5, 1.5)
# Fill prices stray at most this many basis points from the instrument's reference price.
PRICE_NOISE_BPS = 50
CENT = Decimal("0.01")
AVG_PRICE_STEP = Decimal("0.0001")

# `replaced`: the original of a cancel/replace (FIX 35=G) ends there; its replacement goes on as an order of its own.
TERMINAL_EXEC_TYPES = frozenset({"fill", "canceled", "rejected", "expired", "replaced"})
STATUS_OF_EXEC_TYPE = {
    "new": "new",
    "partial_fill": "partially_filled",
    "fill": "filled",
    "canceled": "canceled",
    "rejected": "rejected",
    "expired": "expired",
    "replaced": "replaced",
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


@dataclass(frozen=True)
class Draws:
    """The chance part of an order's fate, drawn first so that a seed decides it whatever the order is."""

    rejected: bool
    canceled: bool
    # How much the limit order finds at its limit: rest (nothing), partial or fill.
    limit_outcome: str


def _draws(config: SimConfig, rng: random.Random) -> Draws:
    # The same draws in the same order whatever the outcome, so that changing one rate (or
    # forcing the limit outcome) does not shift the random stream of everything after it.
    rejected = rng.random() < config.reject_rate
    canceled = rng.random() < config.cancel_rate
    drawn = rng.choice(("rest", "partial", "fill"))
    return Draws(rejected, canceled, drawn if config.limit_outcome == "random" else config.limit_outcome)


def _outcome(order: OrderRequest, draws: Draws) -> str:
    """fill, partial (then rest), rest, cancel (partial fills, then `canceled`) or kill (`canceled`, no fill)."""
    limit = _limit(order)
    if draws.canceled:
        # The venue's own cancel; an all-or-nothing order cannot have had fills before it.
        outcome = "kill" if order.time_in_force == "fok" else "cancel"
    elif order.type == "market":
        outcome = "fill"
    elif limit is not None and limit < CENT:
        # A buy limit under one cent cannot be met by any price the exchange prints.
        outcome = "rest"
    else:
        outcome = draws.limit_outcome
    if order.time_in_force == "fok" and outcome != "fill":
        return "kill"
    if order.time_in_force == "ioc":
        # Nothing rests: what was not filled at once is canceled.
        return {"rest": "kill", "partial": "cancel"}.get(outcome, outcome)
    return outcome


def _sizes(order: OrderRequest, outcome: str, config: SimConfig, rng: random.Random) -> list[int]:
    quantity = order.quantity
    if outcome == "fill":
        if order.time_in_force == "fok":
            # All at once: one execution of the whole quantity.
            return [quantity]
        return _split(quantity, rng.randint(1, min(config.max_partial_fills, quantity)), rng)
    if outcome in ("partial", "cancel") and quantity > 1:
        count = rng.randint(1, min(config.max_partial_fills, quantity - 1))
        return _split(rng.randint(count, quantity - 1), count, rng)
    return []


def plan_execution(order: OrderRequest, config: SimConfig, rng: random.Random, lifetime: Lifetime) -> list[Step]:
    """Every report an accepted order will get, drawn at once so that a seed decides all of it.

    Market orders fill completely in 1..max_partial_fills executions. Limit orders rest,
    fill partly and then rest, or fill completely, one third each (or as limit_outcome
    forces); what rests expires when its lifetime ends (day, gtd; gtc never). ioc cancels
    what it did not fill at once; fok fills completely in one execution or is canceled
    without any. Any order may instead be rejected (a lone `rejected`) or canceled by the
    venue after 1..max_partial_fills partial fills. A stop order gets its `new` and rests
    untriggered until it expires: its fills are planned when it triggers (plan_triggered).
    """
    draws = _draws(config, rng)
    if draws.rejected:
        return [Step(_jitter(config, rng), "rejected")]
    if order.type in STOP_TYPES:
        steps = [Step(_jitter(config, rng), "new")]
        return steps + _expiry(steps, lifetime.deadline_s(steps[0].delay_s), config, rng)
    return _work(order, config, rng, draws, lifetime, reference_price(order.instrument), acknowledged=False)


def plan_triggered(
    order: OrderRequest, config: SimConfig, rng: random.Random, lifetime: Lifetime, reference: Decimal
) -> list[Step]:
    """The reports of a triggered stop, worked as `order` (the market or limit order it became) from the trigger on.

    No `new` (it had its own) and no reject (a venue rejects at entry); its fills stray
    around `reference`, the price that triggered it.
    """
    return _work(order, config, rng, _draws(config, rng), lifetime, reference, acknowledged=True)


def plan_replacement(order: OrderRequest, config: SimConfig, rng: random.Random, lifetime: Lifetime) -> list[Step]:
    """The reports of a replacement, worked as `order` (its quantity what is left after the carried fills).

    No `new`: the replace itself acknowledged it, at once, so the plan starts from there.
    No reject: a venue refuses a replace in its answer, not in a report after accepting it
    (the reject draw is still made, so the engine's stream moves as for any order). A stop
    replacement rests untriggered until it expires; its fills come with its trigger.
    """
    draws = _draws(config, rng)
    if order.type in STOP_TYPES:
        return _expiry([], lifetime.deadline_s(0.0), config, rng)
    return _work(order, config, rng, draws, lifetime, reference_price(order.instrument), acknowledged=True)


def _jitter(config: SimConfig, rng: random.Random) -> float:
    return rng.uniform(*JITTER_RANGE) * config.exec_delay_s


def _work(
    order: OrderRequest,
    config: SimConfig,
    rng: random.Random,
    draws: Draws,
    lifetime: Lifetime,
    reference: Decimal,
    acknowledged: bool,
) -> list[Step]:
    outcome = _outcome(order, draws)
    sizes = _sizes(order, outcome, config, rng)
    steps = [] if acknowledged else [Step(_jitter(config, rng), "new")]
    for index, size in enumerate(sizes):
        exec_type = "fill" if outcome == "fill" and index == len(sizes) - 1 else "partial_fill"
        steps.append(Step(_jitter(config, rng), exec_type, size, _fill_price(order, reference, rng)))
    if outcome in ("cancel", "kill"):
        steps.append(Step(_jitter(config, rng), "canceled"))
    elif outcome in ("rest", "partial"):
        acknowledged_after_s = 0.0 if acknowledged else steps[0].delay_s
        steps.extend(_expiry(steps, lifetime.deadline_s(acknowledged_after_s), config, rng))
    return steps


def _expiry(steps: list[Step], deadline_s: float | None, config: SimConfig, rng: random.Random) -> list[Step]:
    """The `expired` step of a resting order at its deadline (from the plan's start); none if it never expires."""
    if deadline_s is None:
        return []
    # Fills planned beyond the deadline still come first: the plan was drawn as one.
    since_start = sum(step.delay_s for step in steps)
    return [Step(max(_jitter(config, rng), deadline_s - since_start), "expired")]


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
