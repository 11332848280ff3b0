"""The DynamoDB order repository against a real emulator over HTTP."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.adapters.dynamodb import DynamoDBOrderRepository, record_class_for
from chalicelib.adapters.repository import ConcurrentModification, OrderAlreadyExists, StorageUnavailable
from chalicelib.domain.model import Order, OrderStatus, OrderTerms, OrderType, Side
from devstack.processes import free_port

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def repo(adapter_stack: dict[str, str]) -> DynamoDBOrderRepository:
    return DynamoDBOrderRepository(record_class_for(adapter_stack["OrdersTableName"]))


def new_order(client_order_id: str | None = None, price: str | None = "123.45") -> Order:
    terms = OrderTerms(
        OrderType.LIMIT if price else OrderType.MARKET,
        Side.SELL,
        "DE0007164600",
        7,
        Decimal(price) if price else None,
        client_order_id,
    )
    return Order.create("acct-1", terms, T0)


def test_an_order_round_trips_exactly(repo: DynamoDBOrderRepository) -> None:
    order = new_order("client-1", price="0.10")
    stored = repo.add(order, sweep_after=T0 + timedelta(minutes=1))
    read = repo.get(order.id)
    assert read == stored
    assert read is not None
    assert read.terms.limit_price == Decimal("0.10")
    assert read.created_at == T0
    assert read.version == 1


def test_a_market_order_has_no_price(repo: DynamoDBOrderRepository) -> None:
    order = new_order(price=None)
    repo.add(order, sweep_after=T0)
    read = repo.get(order.id)
    assert read is not None
    assert read.terms.limit_price is None


def test_the_same_id_cannot_be_added_twice(repo: DynamoDBOrderRepository) -> None:
    order = new_order()
    repo.add(order, sweep_after=T0)
    with pytest.raises(OrderAlreadyExists):
        repo.add(dataclasses.replace(order, terms=dataclasses.replace(order.terms, quantity=1)), sweep_after=T0)
    read = repo.get(order.id)
    assert read is not None
    assert read.terms.quantity == 7


def test_unknown_order_is_none(repo: DynamoDBOrderRepository) -> None:
    assert repo.get("00000000-0000-4000-8000-000000000000") is None


def test_a_stale_copy_cannot_overwrite_a_newer_one(repo: DynamoDBOrderRepository) -> None:
    stored = repo.add(new_order(), sweep_after=T0)
    placed = repo.update(stored.placed("X1", T0), sweep_after=None)
    assert placed.version == 2
    with pytest.raises(ConcurrentModification):
        repo.update(stored.failed("late", T0), sweep_after=None)
    read = repo.get(stored.id)
    assert read is not None
    assert read.status is OrderStatus.PLACED
    assert read.exchange_order_id == "X1"


def test_only_pending_orders_past_their_sweep_time_are_due(repo: DynamoDBOrderRepository) -> None:
    # Far in the past so that orders other tests left behind sort after ours.
    early = datetime(2001, 1, 1, tzinfo=UTC)
    due = repo.add(new_order(), sweep_after=early)
    later = repo.add(new_order(), sweep_after=early + timedelta(hours=1))
    settled = repo.add(new_order(), sweep_after=early)
    repo.update(settled.placed("X2", T0), sweep_after=None)
    found = repo.pending_due_for_sweep(early + timedelta(minutes=1), limit=1000)
    assert due.id in found
    assert later.id not in found
    assert settled.id not in found
    # Moving the sweep time on takes it out of what is due.
    repo.update(due, sweep_after=early + timedelta(days=1))
    assert due.id not in repo.pending_due_for_sweep(early + timedelta(minutes=1), limit=1000)


def test_an_unreachable_table_is_storage_unavailable(adapter_stack: dict[str, str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    repo = DynamoDBOrderRepository(
        record_class_for(adapter_stack["OrdersTableName"], host=dead, max_retry_attempts=0, connect_timeout_s=0.5)
    )
    with pytest.raises(StorageUnavailable):
        repo.add(new_order(), sweep_after=T0)
    with pytest.raises(StorageUnavailable):
        repo.get("00000000-0000-4000-8000-000000000000")
