"""The simulator's knobs: their environment variables, defaults and checks, the same at start and in /admin/config."""

from __future__ import annotations

import hmac
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

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
STATUS_FAILURE_RATE_ENV = "EXCHANGE_STATUS_FAILURE_RATE"
LOST_ANSWER_RATE_ENV = "EXCHANGE_LOST_ANSWER_RATE"
LOST_ANSWER_ORDER_RATE_ENV = "EXCHANGE_LOST_ANSWER_ORDER_RATE"
FEED_LOSS_RATE_ENV = "EXCHANGE_FEED_LOSS_RATE"
LIMIT_OUTCOME_ENV = "EXCHANGE_LIMIT_OUTCOME"
SESSION_CLOSE_ENV = "EXCHANGE_SESSION_CLOSE_UTC"
SESSION_LENGTH_ENV = "EXCHANGE_SESSION_LENGTH_S"
PRICE_TICK_ENV = "EXCHANGE_PRICE_TICK_S"
PRICE_STEP_ENV = "EXCHANGE_PRICE_STEP_BPS"
# The venue credential the simulator demands (as `Authorization: Bearer <credential>`) on order entry, cancel,
# status, reference prices and the feed's handshake; unset, it demands none (most harnesses run it so).
CREDENTIAL_ENV = "EXCHANGE_SIM_CREDENTIAL"
DEFAULT_FAILURE_RATE = 0.1
DEFAULT_LATENCY_S = 0.5
DEFAULT_EXEC_DELAY_S = 0.2
DEFAULT_MAX_PARTIAL_FILLS = 3
# None: a day order lives until its session closes, as on a venue; harnesses that want limit
# orders over within seconds set it (tests/e2e, chaos).
DEFAULT_LIMIT_TTL_S: float | None = None
DEFAULT_REJECT_RATE = 0.02
DEFAULT_CANCEL_RATE = 0.03
DEFAULT_FEED_DUPLICATE_RATE = 0.0
DEFAULT_FEED_REORDER_RATE = 0.0
# The faults our state must converge through (lost answers, lost reports, a status query
# that fails): off unless a test or a chaos scenario asks for them.
DEFAULT_STATUS_FAILURE_RATE = 0.0
DEFAULT_LOST_ANSWER_RATE = 0.0
DEFAULT_LOST_ANSWER_ORDER_RATE = 0.0
DEFAULT_FEED_LOSS_RATE = 0.0
# How much a limit order finds at its limit: drawn per order ("random": rest, fill partly or
# fill completely, a third each) or forced, so that a test can have ioc, fok and expiry at will.
LIMIT_OUTCOMES = ("random", "rest", "partial", "fill")
DEFAULT_LIMIT_OUTCOME = "random"
# When the trading session closes (day orders expire), a time of day in UTC; session_length_s,
# when set, makes sessions close every so many seconds instead (short sessions for tests).
DEFAULT_SESSION_CLOSE_UTC = "20:00"
DEFAULT_SESSION_LENGTH_S: float | None = None
# The price path each instrument walks (and stop orders watch): a step every tick, by at most
# this many basis points.
DEFAULT_PRICE_TICK_S = 1.0
DEFAULT_PRICE_STEP_BPS = 10
TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")


class InvalidValue(ValueError):
    """A knob or request field that the simulator refuses; the message says what is wrong."""


def finite_number(value: object, name: str) -> float:
    # bool is an int in Python, but `true` is not a number in anyone's JSON.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(f"{name} must be a finite number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer of some 309 digits or more: no float holds it
        raise InvalidValue(f"{name} must be a finite number, got an integer of {len(str(abs(value)))} digits") from None
    if not math.isfinite(number):
        raise InvalidValue(f"{name} must be a finite number, got {value!r}")
    return number


def check_rate(value: object, name: str) -> float:
    rate = finite_number(value, name)
    if not 0.0 <= rate <= 1.0:
        raise InvalidValue(f"{name} must be between 0 and 1, got {value!r}")
    return rate


def check_seconds(value: object, name: str) -> float:
    seconds = finite_number(value, name)
    if seconds < 0:
        raise InvalidValue(f"{name} must be at least 0, got {value!r}")
    return seconds


def check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidValue(f"{name} must be an integer of at least 1, got {value!r}")
    return value


def check_optional_seconds(value: object, name: str) -> float | None:
    return None if value is None else check_seconds(value, name)


def check_optional_positive_seconds(value: object, name: str) -> float | None:
    if value is None:
        return None
    seconds = finite_number(value, name)
    if seconds <= 0:
        raise InvalidValue(f"{name} must be more than 0 (or null), got {value!r}")
    return seconds


def check_positive_seconds(value: object, name: str) -> float:
    seconds = finite_number(value, name)
    if seconds <= 0:
        raise InvalidValue(f"{name} must be more than 0, got {value!r}")
    return seconds


def check_basis_points(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10000:
        raise InvalidValue(f"{name} must be an integer from 0 to 10000, got {value!r}")
    return value


def check_time_of_day(value: object, name: str) -> str:
    if not isinstance(value, str) or not TIME_OF_DAY.match(value):
        raise InvalidValue(f"{name} must be a time of day in UTC as HH:MM or HH:MM:SS, got {value!r}")
    return value


def check_limit_outcome(value: object, name: str) -> str:
    if not isinstance(value, str) or value not in LIMIT_OUTCOMES:
        raise InvalidValue(f"{name} must be one of {', '.join(map(repr, LIMIT_OUTCOMES))}, got {value!r}")
    return value


def check_failure_rate(value: object, name: str = "failure_rate") -> float:
    return check_rate(value, name)


def check_latency(value: object, name: str = "latency_s") -> float:
    return check_seconds(value, name)


KnobValue = float | int | str | None


@dataclass(frozen=True)
class Knob:
    """One setting: its /admin/config key, its environment variable and the check both go through."""

    key: str
    env: str
    check: Callable[[object, str], KnobValue]
    # How an environment value (text) is read: counts must not go through float, or "3.5" would pass.
    kind: Literal["number", "integer", "text"] = "number"


KNOBS = (
    Knob("failure_rate", FAILURE_RATE_ENV, check_rate),
    Knob("latency_s", LATENCY_ENV, check_seconds),
    Knob("exec_delay_s", EXEC_DELAY_ENV, check_seconds),
    Knob("max_partial_fills", MAX_PARTIAL_FILLS_ENV, check_count, kind="integer"),
    Knob("limit_ttl_s", LIMIT_TTL_ENV, check_optional_seconds),
    Knob("reject_rate", REJECT_RATE_ENV, check_rate),
    Knob("cancel_rate", CANCEL_RATE_ENV, check_rate),
    Knob("feed_duplicate_rate", FEED_DUPLICATE_RATE_ENV, check_rate),
    Knob("feed_reorder_rate", FEED_REORDER_RATE_ENV, check_rate),
    Knob("status_failure_rate", STATUS_FAILURE_RATE_ENV, check_rate),
    Knob("lost_answer_rate", LOST_ANSWER_RATE_ENV, check_rate),
    Knob("lost_answer_order_rate", LOST_ANSWER_ORDER_RATE_ENV, check_rate),
    Knob("feed_loss_rate", FEED_LOSS_RATE_ENV, check_rate),
    Knob("limit_outcome", LIMIT_OUTCOME_ENV, check_limit_outcome, kind="text"),
    Knob("session_close_utc", SESSION_CLOSE_ENV, check_time_of_day, kind="text"),
    Knob("session_length_s", SESSION_LENGTH_ENV, check_optional_positive_seconds),
    Knob("price_tick_s", PRICE_TICK_ENV, check_positive_seconds),
    Knob("price_step_bps", PRICE_STEP_ENV, check_basis_points, kind="integer"),
)
KNOB_KEYS = tuple(knob.key for knob in KNOBS)


@dataclass(frozen=True)
class SimConfig:
    failure_rate: float = DEFAULT_FAILURE_RATE
    latency_s: float = DEFAULT_LATENCY_S
    exec_delay_s: float = DEFAULT_EXEC_DELAY_S
    max_partial_fills: int = DEFAULT_MAX_PARTIAL_FILLS
    limit_ttl_s: float | None = DEFAULT_LIMIT_TTL_S
    reject_rate: float = DEFAULT_REJECT_RATE
    cancel_rate: float = DEFAULT_CANCEL_RATE
    feed_duplicate_rate: float = DEFAULT_FEED_DUPLICATE_RATE
    feed_reorder_rate: float = DEFAULT_FEED_REORDER_RATE
    status_failure_rate: float = DEFAULT_STATUS_FAILURE_RATE
    lost_answer_rate: float = DEFAULT_LOST_ANSWER_RATE
    lost_answer_order_rate: float = DEFAULT_LOST_ANSWER_ORDER_RATE
    feed_loss_rate: float = DEFAULT_FEED_LOSS_RATE
    limit_outcome: str = DEFAULT_LIMIT_OUTCOME
    session_close_utc: str = DEFAULT_SESSION_CLOSE_UTC
    session_length_s: float | None = DEFAULT_SESSION_LENGTH_S
    price_tick_s: float = DEFAULT_PRICE_TICK_S
    price_step_bps: int = DEFAULT_PRICE_STEP_BPS

    def to_json(self) -> dict[str, KnobValue]:
        return {key: cast(KnobValue, getattr(self, key)) for key in KNOB_KEYS}

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


def _env_value(environ: Mapping[str, str], knob: Knob) -> KnobValue:
    # An empty value is what `FOO=` in an env file gives; it means "not set", as for most tools.
    raw = environ.get(knob.env, "").strip()
    if not raw or knob.kind == "text":
        return raw or None
    try:
        return int(raw) if knob.kind == "integer" else float(raw)
    except ValueError:
        kind = "an integer" if knob.kind == "integer" else "a number"
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


def bearer_accepted(expected: str | None, authorization: str | None) -> bool:
    """Whether an Authorization header value carries the expected credential (any, when none is expected)."""
    if expected is None:
        return True
    scheme, _, token = (authorization or "").strip().partition(" ")
    # Constant time: how much of a guess matched must not show in the answer's timing.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


def credential_from(option: str | None, environ: Mapping[str, str]) -> str | None:
    """The credential to demand: the option, else the environment; empty means none."""
    value = (option if option is not None else environ.get(CREDENTIAL_ENV, "")).strip()
    return value or None
