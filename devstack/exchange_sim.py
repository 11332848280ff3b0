"""Exchange simulator: a stand-in exchange on loopback; orders in over HTTP/JSON, executions out over WebSocket."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import enum
import hashlib
import heapq
import ipaddress
import itertools
import json
import math
import os
import random
import secrets
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from devstack.processes import LOOPBACK

FAILURE_RATE_ENV = "EXCHANGE_FAILURE_RATE"
LATENCY_ENV = "EXCHANGE_LATENCY_S"
SEED_ENV = "EXCHANGE_SEED"
EXEC_DELAY_ENV = "EXCHANGE_EXEC_DELAY_S"
MAX_PARTIAL_FILLS_ENV = "EXCHANGE_MAX_PARTIAL_FILLS"
LIMIT_TTL_ENV = "EXCHANGE_LIMIT_TTL_S"
REJECT_RATE_ENV = "EXCHANGE_REJECT_RATE"
CANCEL_RATE_ENV = "EXCHANGE_CANCEL_RATE"
FEED_DUPLICATE_RATE_ENV = "EXCHANGE_FEED_DUPLICATE_RATE"
FEED_REORDER_RATE_ENV = "EXCHANGE_FEED_REORDER_RATE"
DEFAULT_FAILURE_RATE = 0.1
DEFAULT_LATENCY_S = 0.5
DEFAULT_EXEC_DELAY_S = 0.2
DEFAULT_MAX_PARTIAL_FILLS = 3
DEFAULT_LIMIT_TTL_S = 5.0
DEFAULT_REJECT_RATE = 0.02
DEFAULT_CANCEL_RATE = 0.03
DEFAULT_FEED_DUPLICATE_RATE = 0.0
DEFAULT_FEED_REORDER_RATE = 0.0
DEFAULT_PORT = 8001
DEFAULT_FEED_PORT = 8002
FEED_PATH = "/feed"
CONNECTION_NOT_AVAILABLE = "connection not available"
# Far above any order; stops a broken client from making us buffer without bound.
MAX_BODY_BYTES = 64 * 1024
# Idle keep-alive connections each hold a thread; drop the ones a client forgot.
IDLE_CONNECTION_TIMEOUT_S = 120.0
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
ORDER_SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit")
# Each step of working an order waits exec_delay_s times a factor from this range, so
# reports of concurrent orders interleave the way they do on a real venue.
JITTER_RANGE = (0.5, 1.5)
# Fill prices stray at most this many basis points from the instrument's reference price.
PRICE_NOISE_BPS = 50
CENT = Decimal("0.01")
AVG_PRICE_STEP = Decimal("0.0001")
# A report held back by the reorder knob goes out after the next one; when no next one
# comes (the last report of a burst), it must not be stuck for good.
REORDER_HOLD_S = 1.0
# Feed clients only ever need to send a close frame; anything big is a broken client.
FEED_MAX_INCOMING_BYTES = 4096
# Bounds the time a client that stopped reading can hold up a shutdown.
FEED_CLOSE_TIMEOUT_S = 1.0
FEED_START_TIMEOUT_S = 10.0
FEED_STOP_TIMEOUT_S = 3.0
SCHEDULER_STOP_TIMEOUT_S = 2.0
# /stats totals over DELETE /orders/{id}; requests, accepted and failures count POST /orders alone.
CANCEL_COUNTERS = ("cancel_requests", "canceled_by_request", "cancels_too_late", "cancels_unknown", "cancel_failures")


class InvalidValue(ValueError):
    """A knob or request field that the simulator refuses; the message says what is wrong."""


class UnknownPath(InvalidValue):
    """A feed request for a path other than the feed's."""


# --- Knobs: the same rules for the environment at start and /admin/config at run time ---


def _finite_number(value: object, name: str) -> float:
    # bool is an int in Python, but `true` is not a number in anyone's JSON.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidValue(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_rate(value: object, name: str) -> float:
    rate = _finite_number(value, name)
    if not 0.0 <= rate <= 1.0:
        raise InvalidValue(f"{name} must be between 0 and 1, got {value!r}")
    return rate


def check_seconds(value: object, name: str) -> float:
    seconds = _finite_number(value, name)
    if seconds < 0:
        raise InvalidValue(f"{name} must be at least 0, got {value!r}")
    return seconds


def check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidValue(f"{name} must be an integer of at least 1, got {value!r}")
    return value


def check_failure_rate(value: object, name: str = "failure_rate") -> float:
    return check_rate(value, name)


def check_latency(value: object, name: str = "latency_s") -> float:
    return check_seconds(value, name)


@dataclass(frozen=True)
class Knob:
    """One setting: its /admin/config key, its environment variable and the check both go through."""

    key: str
    env: str
    check: Callable[[object, str], float | int]
    # Environment values are text; counts must not go through float, or "3.5" would pass.
    integer: bool = False


KNOBS = (
    Knob("failure_rate", FAILURE_RATE_ENV, check_rate),
    Knob("latency_s", LATENCY_ENV, check_seconds),
    Knob("exec_delay_s", EXEC_DELAY_ENV, check_seconds),
    Knob("max_partial_fills", MAX_PARTIAL_FILLS_ENV, check_count, integer=True),
    Knob("limit_ttl_s", LIMIT_TTL_ENV, check_seconds),
    Knob("reject_rate", REJECT_RATE_ENV, check_rate),
    Knob("cancel_rate", CANCEL_RATE_ENV, check_rate),
    Knob("feed_duplicate_rate", FEED_DUPLICATE_RATE_ENV, check_rate),
    Knob("feed_reorder_rate", FEED_REORDER_RATE_ENV, check_rate),
)
KNOB_KEYS = tuple(knob.key for knob in KNOBS)


@dataclass(frozen=True)
class SimConfig:
    failure_rate: float = DEFAULT_FAILURE_RATE
    latency_s: float = DEFAULT_LATENCY_S
    exec_delay_s: float = DEFAULT_EXEC_DELAY_S
    max_partial_fills: int = DEFAULT_MAX_PARTIAL_FILLS
    limit_ttl_s: float = DEFAULT_LIMIT_TTL_S
    reject_rate: float = DEFAULT_REJECT_RATE
    cancel_rate: float = DEFAULT_CANCEL_RATE
    feed_duplicate_rate: float = DEFAULT_FEED_DUPLICATE_RATE
    feed_reorder_rate: float = DEFAULT_FEED_REORDER_RATE

    def to_json(self) -> dict[str, float | int]:
        return {key: cast(float | int, getattr(self, key)) for key in KNOB_KEYS}

    def updated(self, changes: object) -> SimConfig:
        """A copy with the changes of an /admin/config body applied; all checked before any is applied."""
        allowed = ", ".join(KNOB_KEYS)
        if not isinstance(changes, dict):
            raise InvalidValue(f"expected a JSON object with any of: {allowed}")
        unknown = sorted(set(changes) - set(KNOB_KEYS))
        if unknown:
            raise InvalidValue(f"unknown config keys: {', '.join(unknown)} (allowed: {allowed})")
        if not changes:
            raise InvalidValue(f"expected at least one of: {allowed}")
        checked: dict[str, Any] = {
            knob.key: knob.check(changes[knob.key], knob.key) for knob in KNOBS if knob.key in changes
        }
        return replace(self, **checked)


def _env_value(environ: Mapping[str, str], knob: Knob) -> float | int | None:
    # An empty value is what `FOO=` in an env file gives; it means "not set", as for most tools.
    raw = environ.get(knob.env, "").strip()
    if not raw:
        return None
    try:
        return int(raw) if knob.integer else float(raw)
    except ValueError:
        kind = "an integer" if knob.integer else "a number"
        raise InvalidValue(f"{knob.env} must be {kind}, got {raw!r}") from None


def config_from_env(environ: Mapping[str, str]) -> tuple[SimConfig, int | None]:
    """Knobs and the random seed from the environment; InvalidValue names the variable at fault."""
    checked: dict[str, Any] = {}
    for knob in KNOBS:
        value = _env_value(environ, knob)
        if value is not None:
            checked[knob.key] = knob.check(value, knob.env)
    seed: int | None = None
    raw_seed = environ.get(SEED_ENV, "").strip()
    if raw_seed:
        try:
            seed = int(raw_seed)
        except ValueError:
            raise InvalidValue(f"{SEED_ENV} must be an integer, got {raw_seed!r}") from None
    return replace(SimConfig(), **checked), seed


# --- Orders ---


@dataclass(frozen=True)
class OrderRequest:
    client_order_id: str
    instrument: str
    side: str
    type: str
    quantity: int
    limit_price: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "client_order_id": self.client_order_id,
            "instrument": self.instrument,
            "side": self.side,
            "type": self.type,
            "quantity": self.quantity,
            "limit_price": self.limit_price,
        }


@dataclass(frozen=True)
class InvalidOrder:
    """A request the exchange refuses for good; client_order_id is kept when readable, to count failures."""

    problem: str
    client_order_id: str | None = None


def _non_empty_string(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(f"{name} must be a non-empty string")
    return value


def _one_of(payload: Mapping[str, Any], name: str, allowed: Sequence[str]) -> str:
    value = payload.get(name)
    if value not in allowed:
        raise InvalidValue(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return cast(str, value)


def parse_order(body: bytes) -> OrderRequest | InvalidOrder:
    """The order in a POST /orders body, or what is wrong with it."""
    try:
        payload = json.loads(body)
    except ValueError:  # also covers bytes that are not UTF-8
        return InvalidOrder("body must be a JSON object")
    if not isinstance(payload, dict):
        return InvalidOrder("body must be a JSON object")
    raw_id = payload.get("client_order_id")
    client_order_id = raw_id if isinstance(raw_id, str) and raw_id.strip() else None
    try:
        missing = [
            name
            for name in ("client_order_id", "instrument", "side", "type", "quantity", "limit_price")
            if name not in payload
        ]
        if missing:
            raise InvalidValue(f"missing field(s): {', '.join(missing)}")
        order_id = _non_empty_string(payload, "client_order_id")
        instrument = _non_empty_string(payload, "instrument")
        side = _one_of(payload, "side", ORDER_SIDES)
        order_type = _one_of(payload, "type", ORDER_TYPES)
        quantity = payload["quantity"]
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise InvalidValue(f"quantity must be a positive integer, got {quantity!r}")
        raw_price = payload["limit_price"]
        limit_price: float | None = None
        if order_type == "limit":
            if raw_price is None:
                raise InvalidValue("limit_price is required for a limit order")
            limit_price = _finite_number(raw_price, "limit_price")
            if limit_price <= 0:
                raise InvalidValue(f"limit_price must be positive, got {raw_price!r}")
        elif raw_price is not None:
            raise InvalidValue("limit_price must be null for a market order")
    except InvalidValue as exc:
        return InvalidOrder(str(exc), client_order_id)
    return OrderRequest(order_id, instrument, side, order_type, quantity, limit_price)


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    INVALID = "invalid"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    client_order_id: str | None = None
    exchange_order_id: str | None = None
    problem: str | None = None


class CancelOutcome(enum.Enum):
    CANCELED = "canceled"
    TOO_LATE = "too_late"
    UNKNOWN = "unknown"
    FAILED = "failed"


@dataclass(frozen=True)
class CancelDecision:
    outcome: CancelOutcome
    exchange_order_id: str | None = None
    # The order's status when the cancel came too late: filled, canceled, rejected or expired.
    status: str | None = None


# --- Working an accepted order: the plan of its execution reports ---

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
    """An order's state as its execution reports so far describe it."""

    quantity: int
    last_exec_type: str = "new"
    cum_qty: int = 0
    notional: Decimal = Decimal(0)
    exec_ids: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.last_exec_type in TERMINAL_EXEC_TYPES

    @property
    def leaves_qty(self) -> int:
        return 0 if self.done else self.quantity - self.cum_qty

    def avg_price(self) -> str | None:
        if self.cum_qty == 0:
            return None
        return str((self.notional / self.cum_qty).quantize(AVG_PRICE_STEP, rounding=ROUND_HALF_EVEN))

    def to_json(self) -> dict[str, Any]:
        return {
            "status": STATUS_OF_EXEC_TYPE[self.last_exec_type],
            "cum_qty": self.cum_qty,
            "leaves_qty": self.leaves_qty,
            "avg_price": self.avg_price(),
            "exec_ids": list(self.exec_ids),
            "done": self.done,
        }


def utc_timestamp() -> str:
    """Now as ISO 8601 UTC with milliseconds and a Z, as in `2026-11-23T21:07:06.123Z`."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- The feed log: every report ever emitted in this process, in seq order ---


@dataclass(frozen=True)
class FeedEntry:
    seq: int
    report: dict[str, Any]
    text: str
    # Drawn once when the report is logged, so every live client sees the same misbehaviour.
    duplicate: bool
    reorder: bool


class FeedLog:
    """Append-only and never cleared, so seq stays gap-free for the life of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[FeedEntry] = []
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call listener (from the appending thread; it must not block) after each append."""
        with self._lock:
            self._listeners.append(listener)

    def append(self, report: Mapping[str, Any], duplicate: bool = False, reorder: bool = False) -> dict[str, Any]:
        with self._lock:
            seq = len(self._entries) + 1
            logged = {"seq": seq, **report}
            self._entries.append(FeedEntry(seq, logged, json.dumps(logged), duplicate, reorder))
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return logged

    @property
    def last_seq(self) -> int:
        with self._lock:
            return len(self._entries)

    def since(self, from_seq: int) -> list[FeedEntry]:
        """The entries with seq >= from_seq, in order; seq n is at index n - 1."""
        with self._lock:
            return self._entries[max(from_seq, 1) - 1 :]


def parse_from_seq(query: str) -> int:
    """from_seq in a query string (default 1); InvalidValue for anything else in it."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidValue(f"malformed query string: {query!r}") from None
    # A misspelt parameter silently meaning "replay from 1" would hide the mistake.
    unknown = sorted({key for key, _ in pairs} - {"from_seq"})
    if unknown:
        raise InvalidValue(f"unknown query parameter(s): {', '.join(unknown)} (allowed: from_seq)")
    values = [value for _, value in pairs]
    if not values:
        return 1
    if len(values) > 1:
        raise InvalidValue("from_seq given more than once")
    raw = values[0]
    # isdecimal() also rejects "+1", " 1" and "1_000", which int() would take.
    if not (raw.isascii() and raw.isdecimal()) or int(raw) < 1:
        raise InvalidValue(f"from_seq must be an integer of at least 1, got {raw!r}")
    return int(raw)


# --- Scheduler: runs the steps of working orders at their time, off the request threads ---


class Scheduler:
    """One thread that calls each job at its due time; jobs due at the same time run in submission order."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="exchange-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_at(self, when: float, job: Callable[[], None]) -> None:
        """Run job at time.monotonic() == when (or as soon after as the thread gets to it)."""
        with self._condition:
            if self._stopped:
                return
            heapq.heappush(self._queue, (when, next(self._counter), job))
            self._condition.notify()

    def clear(self) -> None:
        """Drop every job not started yet."""
        with self._condition:
            self._queue.clear()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._queue.clear()
            self._condition.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=SCHEDULER_STOP_TIMEOUT_S)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopped:
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        break
                    self._condition.wait(None if not self._queue else self._queue[0][0] - now)
                if self._stopped:
                    return
                _, _, job = heapq.heappop(self._queue)
            # Outside the condition: a job takes the exchange's lock, and call_at is called under it.
            try:
                job()
            except Exception:
                traceback.print_exc(file=sys.stderr)


# --- The exchange: order book, counters, knobs and the execution engine ---


@dataclass
class OrderRecord:
    """Everything the exchange saw for one client order id."""

    exchange_order_id: str | None = None
    order: OrderRequest | None = None
    accepted: int = 0
    duplicates_rejected: int = 0
    failures: int = 0
    cancel_requests: int = 0
    canceled_by_request: int = 0
    cancels_too_late: int = 0
    cancel_failures: int = 0
    execution: Execution | None = None

    def counters(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "duplicates_rejected": self.duplicates_rejected,
            "failures": self.failures,
            "cancel_requests": self.cancel_requests,
            "canceled_by_request": self.canceled_by_request,
            "cancels_too_late": self.cancels_too_late,
            "cancel_failures": self.cancel_failures,
        }


def _derived_random(seed: int | None, purpose: str) -> random.Random:
    # A stream of its own per purpose: working orders must not shift the failure draws that
    # a seeded run of order entry alone reproduces. A str seed is hashed with SHA-512, not salted.
    return random.Random(None if seed is None else f"{seed}:{purpose}")


class ExchangeState:
    """The order book, counters, knobs and execution engine; every method is safe to call from any thread."""

    def __init__(self, config: SimConfig, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(seed)
        self._engine_rng = _derived_random(seed, "engine")
        self._feed_rng = _derived_random(seed, "feed")
        self._cancel_rng = _derived_random(seed, "cancel")
        # Exchange order ids and exec ids stay unique across resets and restarts: a backend
        # that stored one from an earlier run must never see it handed out again.
        token = secrets.token_hex(3)
        self._id_prefix = f"X{token}-"
        self._id_sequence = itertools.count(1)
        self._exec_prefix = f"E{token}-"
        self._exec_sequence = itertools.count(1)
        self._orders: dict[str, OrderRecord] = {}
        self._requests = 0
        self._accepted = 0
        self._duplicates_rejected = 0
        self._failures = 0
        self._cancel_counts = dict.fromkeys(CANCEL_COUNTERS, 0)
        # Bumped by reset: a step already taken off the scheduler when the reset happened
        # sees a different generation and does nothing.
        self._generation = 0
        self.feed_log = FeedLog()
        self._scheduler = Scheduler()

    def start(self) -> None:
        """Start working accepted orders in the background."""
        self._scheduler.start()

    def stop(self) -> None:
        """Stop working orders; no report is emitted after this returns."""
        self._scheduler.stop()

    @property
    def config(self) -> SimConfig:
        with self._lock:
            return self._config

    def update_config(self, changes: object) -> SimConfig:
        with self._lock:
            self._config = self._config.updated(changes)
            return self._config

    def reset(self) -> None:
        """Forget every order, counter and pending execution step.

        Knobs, the random streams, the id sequences and the feed log go on: a feed client
        (the bridge) has checkpointed a seq, so seq must never start again at 1 within a
        process. Orders still being worked get no further report, not even a terminal one.
        """
        with self._lock:
            self._orders.clear()
            self._requests = self._accepted = self._duplicates_rejected = self._failures = 0
            self._cancel_counts = dict.fromkeys(CANCEL_COUNTERS, 0)
            self._generation += 1
            self._scheduler.clear()

    def submit(self, request: OrderRequest | InvalidOrder) -> Decision:
        """Decide one order entry attempt; the duplicate check and the acceptance are one step."""
        with self._lock:
            self._requests += 1
            # One draw per attempt whatever the rate, so a seeded run gives the same
            # failure pattern even if the rate is changed in between.
            failed = self._rng.random() < self._config.failure_rate
            client_order_id = request.client_order_id
            if failed:
                # The request never reached the matching engine: nothing is decided, so even
                # an invalid order or a duplicate just sees the connection fail.
                self._failures += 1
                if client_order_id is not None:
                    self._orders.setdefault(client_order_id, OrderRecord()).failures += 1
                return Decision(Outcome.FAILED, client_order_id, problem=CONNECTION_NOT_AVAILABLE)
            if isinstance(request, InvalidOrder):
                return Decision(Outcome.INVALID, client_order_id, problem=request.problem)
            record = self._orders.setdefault(request.client_order_id, OrderRecord())
            if record.exchange_order_id is not None:
                record.duplicates_rejected += 1
                self._duplicates_rejected += 1
                return Decision(Outcome.DUPLICATE, request.client_order_id, record.exchange_order_id)
            record.exchange_order_id = f"{self._id_prefix}{next(self._id_sequence):06d}"
            record.order = request
            record.accepted += 1
            self._accepted += 1
            self._schedule(request, plan_execution(request, self._config, self._engine_rng))
            return Decision(Outcome.ACCEPTED, request.client_order_id, record.exchange_order_id)

    def _schedule(self, order: OrderRequest, steps: Sequence[Step]) -> None:
        # Absolute due times from one start: steps of one order never overtake each other,
        # and the scheduler runs equal due times in submission order.
        due = time.monotonic()
        generation = self._generation
        for step in steps:
            due += step.delay_s
            self._scheduler.call_at(due, self._step_job(order.client_order_id, generation, step))

    def _step_job(self, client_order_id: str, generation: int, step: Step) -> Callable[[], None]:
        return lambda: self._emit(client_order_id, generation, step)

    def _emit(self, client_order_id: str, generation: int, step: Step) -> None:
        """Apply one step to the order and log its report; the feed sends it from the log."""
        with self._lock:
            record = self._orders.get(client_order_id)
            if generation != self._generation or record is None or record.order is None:
                return
            # A cancel on request ends the order ahead of its plan: the steps still queued
            # for it (fills, the venue's own ending) must not follow its terminal report.
            if record.execution is not None and record.execution.done:
                return
            self._report(client_order_id, record, step)

    def _report(self, client_order_id: str, record: OrderRecord, step: Step) -> None:
        """Apply step to an accepted order and log its report; the caller holds the lock."""
        assert record.order is not None
        execution = record.execution or Execution(record.order.quantity)
        record.execution = execution
        exec_id = f"{self._exec_prefix}{next(self._exec_sequence):08d}"
        execution.last_exec_type = step.exec_type
        if step.last_price is not None:
            execution.cum_qty += step.last_qty
            execution.notional += step.last_price * step.last_qty
        execution.exec_ids.append(exec_id)
        report = {
            "exec_id": exec_id,
            "client_order_id": client_order_id,
            "exchange_order_id": record.exchange_order_id,
            "exec_type": step.exec_type,
            "last_qty": step.last_qty,
            "last_price": None if step.last_price is None else str(step.last_price),
            "cum_qty": execution.cum_qty,
            "leaves_qty": execution.leaves_qty,
            "avg_price": execution.avg_price(),
            "transact_time": utc_timestamp(),
        }
        # Two draws per report whatever the rates, for the same reason as in submit.
        duplicate = self._feed_rng.random() < self._config.feed_duplicate_rate
        reorder = self._feed_rng.random() < self._config.feed_reorder_rate
        # Under the lock, so that seq order is the order in which the reports happened.
        self.feed_log.append(report, duplicate=duplicate, reorder=reorder)

    def cancel(self, client_order_id: str) -> CancelDecision:
        """Decide one cancel attempt; the check that the order is live and its ending are one step."""
        with self._lock:
            self._cancel_counts["cancel_requests"] += 1
            # A stream of its own, one draw per attempt: cancels must not shift the seeded
            # failure pattern of order entry, nor the engine's plans.
            failed = self._cancel_rng.random() < self._config.failure_rate
            record = self._orders.get(client_order_id)
            if record is not None:
                record.cancel_requests += 1
            if failed:
                # As for order entry: the request never reached the matching engine.
                self._cancel_counts["cancel_failures"] += 1
                if record is not None:
                    record.cancel_failures += 1
                return CancelDecision(CancelOutcome.FAILED)
            # A record without an exchange order id is one whose every entry attempt failed.
            if record is None or record.exchange_order_id is None or record.order is None:
                self._cancel_counts["cancels_unknown"] += 1
                return CancelDecision(CancelOutcome.UNKNOWN)
            execution = record.execution
            if execution is not None and execution.done:
                self._cancel_counts["cancels_too_late"] += 1
                record.cancels_too_late += 1
                return CancelDecision(
                    CancelOutcome.TOO_LATE, record.exchange_order_id, STATUS_OF_EXEC_TYPE[execution.last_exec_type]
                )
            if execution is None:
                # Accepted but not acknowledged on the feed yet: the venue acknowledges before
                # it cancels, so a consumer still sees `new` first, as the protocol promises.
                self._report(client_order_id, record, Step(0.0, "new"))
            # Terminal, so _emit drops whatever is still queued for this order.
            self._report(client_order_id, record, Step(0.0, "canceled"))
            self._cancel_counts["canceled_by_request"] += 1
            record.canceled_by_request += 1
            return CancelDecision(CancelOutcome.CANCELED, record.exchange_order_id)

    def order_view(self, client_order_id: str) -> dict[str, Any] | None:
        """What the exchange knows about one client order id, or None if it never saw it."""
        with self._lock:
            record = self._orders.get(client_order_id)
            if record is None:
                return None
            return {
                "client_order_id": client_order_id,
                "exchange_order_id": record.exchange_order_id,
                **record.counters(),
                "order": None if record.order is None else record.order.to_json(),
                "execution": None if record.execution is None else record.execution.to_json(),
            }

    def stats(self) -> dict[str, Any]:
        """Totals over all order entry and cancel attempts since start or the last reset, and the feed's last seq."""
        with self._lock:
            return {
                "requests": self._requests,
                "accepted": self._accepted,
                "duplicates_rejected": self._duplicates_rejected,
                "failures": self._failures,
                **self._cancel_counts,
                "orders": {order_id: record.counters() for order_id, record in self._orders.items()},
                "feed_seq": self.feed_log.last_seq,
            }


# --- Execution feed over WebSocket ---


def _feed_from_seq(request_path: str) -> int:
    """from_seq of a feed request; InvalidValue if the path or the query is wrong."""
    parts = urlsplit(request_path)
    if parts.path != FEED_PATH:
        raise UnknownPath(f"no such path: {parts.path}; use {FEED_PATH}?from_seq=N")
    return parse_from_seq(parts.query)


class FeedServer:
    """The WebSocket endpoint, on an asyncio loop in a thread of its own.

    Each client has a cursor into the feed log and reads from there: a client that reads
    slowly only falls behind in the log, and neither the engine nor other clients wait for it.
    """

    def __init__(self, log: FeedLog, host: str, port: int, verbose: bool = False) -> None:
        self._log = log
        self._host = host
        self._requested_port = port
        self._verbose = verbose
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="exchange-feed", daemon=True)
        self._started = threading.Event()
        self._serving = threading.Event()
        self._startup_error: OSError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        # Replaced on every append and set, so each waiting client wakes once per append.
        self._wakeup: asyncio.Event | None = None

    def start(self) -> None:
        """Listen; OSError if the port cannot be had."""
        self._thread.start()
        if not self._started.wait(FEED_START_TIMEOUT_S):
            raise OSError(f"feed did not start within {FEED_START_TIMEOUT_S}s")
        if self._startup_error is not None:
            raise self._startup_error

    def serving(self) -> bool:
        return self._serving.is_set() and self._thread.is_alive()

    def stop(self) -> None:
        """Close every client connection (code 1001) and the listener."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive():
            self._thread.join(timeout=FEED_STOP_TIMEOUT_S + FEED_CLOSE_TIMEOUT_S + 1)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            traceback.print_exc(file=sys.stderr)
        finally:
            self._serving.clear()
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._wakeup = asyncio.Event()
        try:
            server = await serve(
                self._handle,
                self._host,
                self._requested_port,
                process_request=self._check_request,
                close_timeout=FEED_CLOSE_TIMEOUT_S,
                max_size=FEED_MAX_INCOMING_BYTES,
            )
        except OSError as exc:
            self._startup_error = exc
            self._started.set()
            return
        self.port = int(server.sockets[0].getsockname()[1])
        self._log.add_listener(self._notify_threadsafe)
        self._serving.set()
        self._started.set()
        await self._stop.wait()
        self._serving.clear()
        server.close()
        # A client that stopped reading gets its connection aborted after close_timeout.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), FEED_STOP_TIMEOUT_S)

    def _notify_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        previous, self._wakeup = self._wakeup, asyncio.Event()
        if previous is not None:
            previous.set()

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            _feed_from_seq(request.path)
        except InvalidValue as exc:
            status = HTTPStatus.NOT_FOUND if isinstance(exc, UnknownPath) else HTTPStatus.BAD_REQUEST
            return connection.respond(status, f"{exc}\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        cursor = _feed_from_seq(connection.request.path if connection.request else FEED_PATH)
        # Reports logged before the client connected are replay: sent exactly as logged.
        # The duplicate and reorder knobs apply only to the ones after.
        live_from = self._log.last_seq + 1
        if self._verbose:
            print(f"exchange feed: client {connection.remote_address} from_seq={cursor}", file=sys.stderr, flush=True)
        closed = asyncio.ensure_future(self._discard_incoming(connection))
        loop = asyncio.get_running_loop()
        held: FeedEntry | None = None
        held_until = 0.0
        try:
            while True:
                # Taken before reading the log: an append after the read sets this very event.
                wakeup = self._wakeup
                entries = self._log.since(cursor)
                for entry in entries:
                    cursor = entry.seq + 1
                    if entry.seq < live_from:
                        await connection.send(entry.text)
                    elif held is not None:
                        await self._send_live(connection, entry)
                        await self._send_live(connection, held)
                        held = None
                    elif entry.reorder:
                        held, held_until = entry, loop.time() + REORDER_HOLD_S
                    else:
                        await self._send_live(connection, entry)
                if entries:
                    continue
                assert wakeup is not None
                woken = asyncio.ensure_future(wakeup.wait())
                timeout = None if held is None else max(0.0, held_until - loop.time())
                done, _ = await asyncio.wait({woken, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                if closed in done:
                    return
                if not done and held is not None:
                    await self._send_live(connection, held)
                    held = None
        except ConnectionClosed:
            return
        finally:
            closed.cancel()

    @staticmethod
    async def _send_live(connection: ServerConnection, entry: FeedEntry) -> None:
        await connection.send(entry.text)
        if entry.duplicate:
            await connection.send(entry.text)

    @staticmethod
    async def _discard_incoming(connection: ServerConnection) -> None:
        # Reading is what notices a close from the client (and the server's own close at
        # shutdown); what a client sends means nothing here.
        with contextlib.suppress(ConnectionClosed):
            async for _ in connection:
                pass


# --- HTTP ---


class ExchangeHTTPServer(ThreadingHTTPServer):
    # Per-connection threads may be asleep in the simulated latency; they must not hold up exit.
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        state: ExchangeState,
        verbose: bool = False,
        feed_serving: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(address, ExchangeRequestHandler)
        self.state = state
        self.verbose = verbose
        self.feed_serving = feed_serving

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close


class ExchangeRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ExchangeSimulator/1.0"
    timeout = IDLE_CONNECTION_TIMEOUT_S
    server: ExchangeHTTPServer

    @property
    def state(self) -> ExchangeState:
        return self.server.state

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            # The body is read even when unused: on a keep-alive connection, unread
            # bytes would be taken for the start of the next request.
            body = self._read_body()
            target = urlsplit(self.path)
            self._route(self.command, target.path, target.query, body)
        except BadRequest as exc:
            if exc.close:
                self.close_connection = True
            self._send_json(exc.status, {"error": str(exc)})
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error in the exchange simulator"})

    def _route(self, method: str, path: str, query: str, body: bytes) -> None:
        if path.startswith("/orders/") and len(path) > len("/orders/"):
            self._require(method, "GET", "DELETE")
            self._order(method, unquote(path[len("/orders/") :]))
            return
        if path == "/orders":
            self._require(method, "POST")
            self._post_order(body)
        elif path == "/executions":
            self._require(method, "GET")
            self._get_executions(query)
        elif path == "/health":
            self._require(method, "GET")
            if self.server.feed_serving():
                self._send_json(HTTPStatus.OK, {"status": "ok"})
            else:
                self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "unavailable", "error": "feed not serving"})
        elif path == "/stats":
            self._require(method, "GET")
            self._send_json(HTTPStatus.OK, self.state.stats())
        elif path == "/admin/config":
            self._require(method, "GET", "POST")
            if method == "POST":
                self._post_config(body)
            else:
                self._send_json(HTTPStatus.OK, self.state.config.to_json())
        elif path == "/admin/reset":
            self._require(method, "POST")
            self.state.reset()
            self._send_json(HTTPStatus.OK, {"status": "reset"})
        else:
            raise BadRequest(HTTPStatus.NOT_FOUND, f"no such path: {path}")

    def _require(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed here; use {' or '.join(allowed)}")

    def _post_order(self, body: bytes) -> None:
        request = parse_order(body)
        # Sleep outside any lock so concurrent attempts overlap, as round trips to a venue do;
        # the decision comes after, so it sees whatever got accepted in the meantime.
        latency_s = self.state.config.latency_s
        if latency_s > 0:
            time.sleep(latency_s)
        decision = self.state.submit(request)
        if decision.outcome is Outcome.ACCEPTED:
            self._send_json(
                HTTPStatus.CREATED,
                {
                    "client_order_id": decision.client_order_id,
                    "exchange_order_id": decision.exchange_order_id,
                    "status": "new",
                },
            )
        elif decision.outcome is Outcome.DUPLICATE:
            self._send_json(
                HTTPStatus.CONFLICT,
                {
                    "error": "duplicate client order id",
                    "client_order_id": decision.client_order_id,
                    "exchange_order_id": decision.exchange_order_id,
                },
            )
        elif decision.outcome is Outcome.FAILED:
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": CONNECTION_NOT_AVAILABLE})
        else:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": decision.problem})

    def _order(self, method: str, client_order_id: str) -> None:
        if method == "DELETE":
            self._delete_order(client_order_id)
        else:
            self._get_order(client_order_id)

    def _delete_order(self, client_order_id: str) -> None:
        """A cancel request: the order ends at once, and its `canceled` report is on the feed."""
        # The same latency as order entry, outside any lock, for the same reason.
        latency_s = self.state.config.latency_s
        if latency_s > 0:
            time.sleep(latency_s)
        decision = self.state.cancel(client_order_id)
        if decision.outcome is CancelOutcome.CANCELED:
            self._send_json(
                HTTPStatus.OK,
                {
                    "status": "cancel_accepted",
                    "client_order_id": client_order_id,
                    "exchange_order_id": decision.exchange_order_id,
                },
            )
        elif decision.outcome is CancelOutcome.TOO_LATE:
            self._send_json(HTTPStatus.CONFLICT, {"error": f"too late to cancel: order is {decision.status}"})
        elif decision.outcome is CancelOutcome.UNKNOWN:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "unknown order"})
        else:
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": CONNECTION_NOT_AVAILABLE})

    def _get_order(self, client_order_id: str) -> None:
        view = self.state.order_view(client_order_id)
        if view is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "unknown client order id"})
        else:
            self._send_json(HTTPStatus.OK, view)

    def _get_executions(self, query: str) -> None:
        try:
            from_seq = parse_from_seq(query)
        except InvalidValue as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None
        log = self.state.feed_log
        reports = [entry.report for entry in log.since(from_seq)]
        last_seq = reports[-1]["seq"] if reports else log.last_seq
        self._send_json(HTTPStatus.OK, {"from_seq": from_seq, "last_seq": last_seq, "reports": reports})

    def _post_config(self, body: bytes) -> None:
        try:
            changes = json.loads(body)
        except ValueError:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "body must be a JSON object") from None
        try:
            config = self.state.update_config(changes)
        except InvalidValue as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None
        self._send_json(HTTPStatus.OK, config.to_json())

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            # Without a length we cannot find the end of the body, so the connection is unusable.
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length", close=True)
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            length = -1
        if length < 0:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"invalid Content-Length: {raw_length!r}", close=True)
        if length > MAX_BODY_BYTES:
            raise BadRequest(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body larger than {MAX_BODY_BYTES} bytes", close=True
            )
        return self.rfile.read(length)

    def _send_json(self, status: HTTPStatus | int, payload: Mapping[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """JSON instead of the stock HTML page, for errors found before any route (bad request line, etc.)."""
        # After a protocol error the stream position is unknown, so the connection ends here.
        self.close_connection = True
        try:
            reason = message or HTTPStatus(code).phrase
        except ValueError:
            reason = message or f"HTTP {code}"
        self.log_error("code %d, message %s", code, reason)
        self._send_json(code, {"error": reason})

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


# --- Process ---


def loopback_host(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IPv4 loopback address, got {text!r}") from None
    if address.version != 4 or not address.is_loopback:
        raise argparse.ArgumentTypeError(f"only IPv4 loopback addresses are allowed, got {text!r}")
    return text


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {port}")
    return port


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = SimConfig()
    knob_help = ", ".join(f"{knob.env} (default {getattr(defaults, knob.key)})" for knob in KNOBS)
    parser = argparse.ArgumentParser(
        prog="python -m devstack.exchange_sim",
        description=__doc__,
        epilog=(
            f"Environment: {knob_help}, {SEED_ENV} (integer, optional). Rates are 0..1, times in seconds; "
            "all but the seed can be changed at run time with POST /admin/config. POST /admin/reset forgets "
            "orders and their pending executions but keeps the feed log: seq never restarts within a process."
        ),
    )
    parser.add_argument("--host", type=loopback_host, default=LOOPBACK, help=f"loopback address (default {LOOPBACK})")
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"HTTP port; 0 picks a free one (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--feed-port",
        type=port_number,
        default=DEFAULT_FEED_PORT,
        help=f"WebSocket execution feed port; 0 picks a free one (default {DEFAULT_FEED_PORT})",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request and feed client to stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config, seed = config_from_env(os.environ)
    except InvalidValue as exc:
        print(f"exchange simulator: {exc}", file=sys.stderr, flush=True)
        return 2
    state = ExchangeState(config, seed)
    feed = FeedServer(state.feed_log, args.host, args.feed_port, verbose=args.verbose)
    try:
        server = ExchangeHTTPServer((args.host, args.port), state, verbose=args.verbose, feed_serving=feed.serving)
    except OSError as exc:
        print(f"exchange simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1

    # Signals are blocked before any thread starts, so every thread inherits the mask and
    # the main thread takes them synchronously in sigwait: no handler runs at an arbitrary
    # point while some lock is held.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        try:
            feed.start()
        except OSError as exc:
            print(
                f"exchange simulator: cannot listen on {args.host}:{args.feed_port}: {exc}", file=sys.stderr, flush=True
            )
            return 1
        state.start()
        # Both sockets listen by now, but HTTP requests are answered only once serve_forever
        # runs: whoever polls /health for readiness can already read both lines.
        print(f"exchange simulator listening on http://{args.host}:{server.port}", flush=True)
        print(f"exchange feed listening on ws://{args.host}:{feed.port}{FEED_PATH}", flush=True)
        serving = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="exchange-http", daemon=True
        )
        serving.start()
        received = signal.sigwait(STOP_SIGNALS)
        if args.verbose:
            print(f"exchange simulator: {signal.Signals(received).name}, stopping", file=sys.stderr, flush=True)
        state.stop()
        server.shutdown()
        serving.join()
    finally:
        state.stop()
        feed.stop()
        server.server_close()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    return 0


if __name__ == "__main__":
    sys.exit(main())
