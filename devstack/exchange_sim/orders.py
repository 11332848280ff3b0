"""Order entry, cancel and status requests: parsing a POST /orders body, and the decisions the exchange answers with."""

from __future__ import annotations

import datetime
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from devstack.exchange_sim.config import InvalidValue, finite_number

CONNECTION_NOT_AVAILABLE = "connection not available"
STATUS_NOT_AVAILABLE = "order status not available"
# The exchange's verdict on a client order id it never accepted, to a cancel and to a
# status query alike: our adapter takes exactly this text (and no other 404) for one.
UNKNOWN_ORDER = "unknown order"
ORDER_SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit", "stop", "stop_limit")
STOP_TYPES = frozenset({"stop", "stop_limit"})
# What a stop order becomes once its stop price is reached.
TRIGGERED_TYPE = {"stop": "market", "stop_limit": "limit"}
TIMES_IN_FORCE = ("day", "gtc", "ioc", "fok", "gtd")
# Filled at once or not at all: nothing of them rests, so nothing of them can wait for a trigger.
IMMEDIATE_TIMES_IN_FORCE = frozenset({"ioc", "fok"})
# Before time in force, clients sent none: their orders were, and are, day orders.
DEFAULT_TIME_IN_FORCE = "day"
REQUIRED_FIELDS = ("client_order_id", "instrument", "side", "type", "quantity", "limit_price")


@dataclass(frozen=True)
class OrderRequest:
    client_order_id: str
    instrument: str
    side: str
    type: str
    quantity: int
    limit_price: float | None
    time_in_force: str = DEFAULT_TIME_IN_FORCE
    # Timezone-aware (UTC) for gtd, None otherwise.
    expires_at: datetime.datetime | None = None
    stop_price: float | None = None

    def to_json(self) -> dict[str, Any]:
        # Every field a JSON scalar, in the order the wire format lists them.
        return {
            "client_order_id": self.client_order_id,
            "instrument": self.instrument,
            "side": self.side,
            "type": self.type,
            "quantity": self.quantity,
            "limit_price": self.limit_price,
            "time_in_force": self.time_in_force,
            "expires_at": None if self.expires_at is None else utc_text(self.expires_at),
            "stop_price": self.stop_price,
        }


def utc_text(moment: datetime.datetime) -> str:
    """A moment as ISO 8601 UTC with a Z, as in `2026-12-02T15:00:00Z` (milliseconds only when it has some)."""
    utc = moment.astimezone(datetime.UTC)
    timespec = "milliseconds" if utc.microsecond else "seconds"
    return utc.isoformat(timespec=timespec).replace("+00:00", "Z")


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


def _positive_price(payload: Mapping[str, Any], name: str) -> float:
    raw = payload.get(name)
    price = finite_number(raw, name)
    if price <= 0:
        raise InvalidValue(f"{name} must be positive, got {raw!r}")
    return price


def _price_if(payload: Mapping[str, Any], name: str, order_type: str, takes: bool) -> float | None:
    """The price field `name`, required when the order type takes it and null (or absent) when it does not."""
    if not takes:
        if payload.get(name) is not None:
            raise InvalidValue(f"{name} must be null for a {order_type} order")
        return None
    if payload.get(name) is None:
        raise InvalidValue(f"{name} is required for a {order_type} order")
    return _positive_price(payload, name)


def _time_in_force(payload: Mapping[str, Any], order_type: str) -> str:
    if "time_in_force" not in payload:
        return DEFAULT_TIME_IN_FORCE
    time_in_force = _one_of(payload, "time_in_force", TIMES_IN_FORCE)
    if order_type in STOP_TYPES and time_in_force in IMMEDIATE_TIMES_IN_FORCE:
        raise InvalidValue(f"time_in_force {time_in_force!r} is not allowed for a {order_type} order")
    return time_in_force


def _expires_at(payload: Mapping[str, Any], time_in_force: str) -> datetime.datetime | None:
    """expires_at: an ISO 8601 time with an offset for gtd, null (or absent) otherwise.

    A time already past is accepted: the order may have spent its retries on the way, and
    it expires at once (an `expired` report right after `new`), which tells the client more
    than a refusal would.
    """
    raw = payload.get("expires_at")
    if time_in_force != "gtd":
        if raw is not None:
            raise InvalidValue(f"expires_at must be null unless time_in_force is 'gtd', got {raw!r}")
        return None
    if raw is None:
        raise InvalidValue("expires_at is required when time_in_force is 'gtd'")
    try:
        moment = datetime.datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidValue(f"expires_at must be an ISO 8601 time with an offset, as 2026-12-02T15:00:00Z, got {raw!r}")
    try:
        return moment.astimezone(datetime.UTC)
    except OverflowError:  # an offset that carries a time near year 1 or 9999 past datetime's range
        raise InvalidValue(f"expires_at is out of range in UTC, got {raw!r}") from None


def _order_from(payload: Mapping[str, Any]) -> OrderRequest:
    """The order in a parsed body; InvalidValue naming the first field that is wrong."""
    missing = [name for name in REQUIRED_FIELDS if name not in payload]
    if missing:
        raise InvalidValue(f"missing field(s): {', '.join(missing)}")
    order_id = _non_empty_string(payload, "client_order_id")
    instrument = _non_empty_string(payload, "instrument")
    side = _one_of(payload, "side", ORDER_SIDES)
    order_type = _one_of(payload, "type", ORDER_TYPES)
    quantity = payload["quantity"]
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
        raise InvalidValue(f"quantity must be a positive integer, got {quantity!r}")
    limit_price = _price_if(payload, "limit_price", order_type, order_type in ("limit", "stop_limit"))
    stop_price = _price_if(payload, "stop_price", order_type, order_type in STOP_TYPES)
    time_in_force = _time_in_force(payload, order_type)
    expires_at = _expires_at(payload, time_in_force)
    return OrderRequest(
        order_id, instrument, side, order_type, quantity, limit_price, time_in_force, expires_at, stop_price
    )


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
        return _order_from(payload)
    except InvalidValue as exc:
        return InvalidOrder(str(exc), client_order_id)


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
    # The lost-answer knobs: the decision stands (an accepted order is worked), but the
    # client gets no answer at all, only a closed connection.
    answer_lost: bool = False


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


class StatusOutcome(enum.Enum):
    KNOWN = "known"
    UNKNOWN = "unknown"
    FAILED = "failed"


@dataclass(frozen=True)
class StatusDecision:
    outcome: StatusOutcome
    # The answer to the order status query (FIX OrderStatusRequest), for KNOWN only.
    answer: Mapping[str, Any] | None = None
