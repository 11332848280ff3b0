"""What the unit tests of the services share: a fixed start time, a clock a test moves, order terms, and the use cases
called the short way, with in-memory fakes (tests/unit/fakes.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from chalicelib.domain.model import Order, OrderTerms, OrderType, Side
from chalicelib.service import client_orders
from chalicelib.service.client_orders import CreatedOrder
from chalicelib.service.exchange_cancel import CancelRequestResult, request_exchange_cancel
from chalicelib.service.placement import PlacementResult, place_order
from tests.unit.fakes import FakeExchange, FakeQueue, FakeRepository, Fakes

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
APPLE = "US0378331005"


class Clock:
    """Stands still at `now` until the test moves it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def limit_terms(
    client_order_id: str | None = None, quantity: int = 10, instrument: str = APPLE, side: Side = Side.BUY
) -> OrderTerms:
    return OrderTerms(OrderType.LIMIT, side, instrument, quantity, Decimal("99.5"), client_order_id)


def create(
    repo: FakeRepository, queue: FakeQueue, terms: OrderTerms, clock: Clock | None = None, account: str = "acct-1"
) -> CreatedOrder:
    # Each call is its own request, with its own correlation id.
    dependencies = Fakes(orders=repo, queue=queue, clock=clock or Clock()).dependencies()
    return client_orders.create_order(account, terms, dependencies, correlation_id=str(uuid.uuid4()))


def place(
    repo: FakeRepository, order_id: str, exchange: FakeExchange, receive_count: int = 1, clock: Clock | None = None
) -> PlacementResult:
    return place_order(
        order_id, receive_count, Fakes(orders=repo, exchange=exchange, clock=clock or Clock()).dependencies()
    )


def cancel(repo: FakeRepository, queue: FakeQueue, order_id: str, account: str, clock: Clock | None = None) -> Order:
    return client_orders.cancel_order(
        order_id, account, Fakes(orders=repo, queue=queue, clock=clock or Clock()).dependencies()
    )


def ask_exchange(
    repo: FakeRepository, order_id: str, exchange: FakeExchange, receive_count: int = 1, clock: Clock | None = None
) -> CancelRequestResult:
    dependencies = Fakes(orders=repo, exchange=exchange, clock=clock or Clock()).dependencies()
    return request_exchange_cancel(order_id, receive_count, dependencies)
