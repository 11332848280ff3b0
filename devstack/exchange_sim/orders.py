"""Order entry, cancel and status requests: parsing a POST /orders body, and the decisions the exchange answers with."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

from devstack.exchange_sim.config import InvalidValue, finite_number

CONNECTION_NOT_AVAILABLE = "connection not available"
STATUS_NOT_AVAILABLE = "order status not available"
# The exchange's verdict on a client order id it never accepted, to a cancel and to a
# status query alike: our adapter takes exactly this text (and no other 404) for one.
UNKNOWN_ORDER = "unknown order"
ORDER_SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit")


@dataclass(frozen=True)
class OrderRequest:
    client_order_id: str
    instrument: str
    side: str
    type: str
    quantity: int
    limit_price: float | None

    def to_json(self) -> dict[str, Any]:
        # Every field is a JSON scalar, in the order the API documents them.
        return asdict(self)


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
            limit_price = finite_number(raw_price, "limit_price")
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
