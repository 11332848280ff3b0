"""Orders and their life cycle; pure, no I/O."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderStatus(StrEnum):
    PENDING = "pending"
    PLACED = "placed"
    FAILED = "failed"


# The one place that says which status may follow which. Everything that
# changes a status (the service layer, the storage adapter's conditional
# writes) derives from this table.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PLACED, OrderStatus.FAILED}),
    OrderStatus.PLACED: frozenset(),
    OrderStatus.FAILED: frozenset(),
}


def can_transition(source: OrderStatus, target: OrderStatus) -> bool:
    return target in TRANSITIONS[source]


def statuses_leading_to(target: OrderStatus) -> frozenset[OrderStatus]:
    """Statuses an order may be in for target to be its next status."""
    return frozenset(source for source, targets in TRANSITIONS.items() if target in targets)


class OrderError(Exception):
    """Base of the domain's errors."""


class OrderNotFound(OrderError):
    pass


class IdempotencyConflict(OrderError):
    """The client order id is already used by an order with different terms."""


class InvalidTransition(OrderError):
    def __init__(self, source: OrderStatus, target: OrderStatus) -> None:
        super().__init__(f"an order cannot go from {source} to {target}")
        self.source = source
        self.target = target


# Fixed namespace: the same client order id always maps to the same order id,
# which makes "create once per idempotency key" a single conditional put.
CLIENT_ORDER_ID_NAMESPACE = uuid.UUID("6f1e4c0a-5a57-4c1b-9a5e-2b7f3d1c9e40")


def order_id_for_client_key(client_order_id: str) -> str:
    return str(uuid.uuid5(CLIENT_ORDER_ID_NAMESPACE, client_order_id))


def new_order_id() -> str:
    return str(uuid.uuid4())


def is_order_id(candidate: str) -> bool:
    """Whether candidate is an order id we could have issued (canonical UUID text)."""
    try:
        return str(uuid.UUID(candidate)) == candidate
    except ValueError:
        return False


@dataclass(frozen=True)
class OrderTerms:
    """What a client asks for; already validated at the edge."""

    type: OrderType
    side: Side
    instrument: str
    quantity: int
    limit_price: Decimal | None
    client_order_id: str | None = None


@dataclass(frozen=True)
class Order:
    id: str
    terms: OrderTerms
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    placed_at: datetime | None = None
    exchange_order_id: str | None = None
    failure_reason: str | None = None
    last_error: str | None = None
    # Optimistic concurrency, as in cosmicpython's aggregates: storage accepts
    # a write only if nobody else wrote since this copy was read. 0 = unsaved.
    version: int = 0

    @classmethod
    def create(cls, terms: OrderTerms, now: datetime) -> Order:
        order_id = order_id_for_client_key(terms.client_order_id) if terms.client_order_id else new_order_id()
        return cls(id=order_id, terms=terms, status=OrderStatus.PENDING, created_at=now, updated_at=now)

    def has_same_terms(self, terms: OrderTerms) -> bool:
        return self.terms == terms

    @property
    def is_pending(self) -> bool:
        return self.status is OrderStatus.PENDING

    def _moved_to(self, target: OrderStatus, now: datetime, **changes: object) -> Order:
        if not can_transition(self.status, target):
            raise InvalidTransition(self.status, target)
        return dataclasses.replace(self, status=target, updated_at=now, **changes)  # type: ignore[arg-type]

    def placed(self, exchange_order_id: str | None, now: datetime) -> Order:
        return self._moved_to(
            OrderStatus.PLACED, now, placed_at=now, exchange_order_id=exchange_order_id, attempts=self.attempts + 1
        )

    def failed(self, reason: str, now: datetime) -> Order:
        return self._moved_to(
            OrderStatus.FAILED, now, failure_reason=reason, last_error=reason, attempts=self.attempts + 1
        )

    def attempt_failed(self, error: str, now: datetime) -> Order:
        """A placement attempt failed and will be retried: still pending, one attempt more."""
        if not self.is_pending:
            raise InvalidTransition(self.status, self.status)
        return dataclasses.replace(self, updated_at=now, last_error=error, attempts=self.attempts + 1)
