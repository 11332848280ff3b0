"""The order state machine and ids."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from chalicelib.domain.model import (
    TRANSITIONS,
    InvalidTransition,
    Order,
    OrderStatus,
    OrderTerms,
    OrderType,
    Side,
    is_order_id,
)

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def terms(**changes: object) -> OrderTerms:
    base: dict[str, object] = {
        "type": OrderType.LIMIT,
        "side": Side.BUY,
        "instrument": "US0378331005",
        "quantity": 10,
        "limit_price": Decimal("101.25"),
        "client_order_id": None,
    }
    base.update(changes)
    return OrderTerms(**base)  # type: ignore[arg-type]


def test_a_new_order_is_pending_with_no_attempts() -> None:
    order = Order.create("acct-1", terms(), NOW)
    assert order.status is OrderStatus.PENDING
    assert order.attempts == 0
    assert is_order_id(order.id)


def test_the_same_client_order_id_always_gives_the_same_order_id() -> None:
    first = Order.create("acct-1", terms(client_order_id="abc-1"), NOW)
    second = Order.create("acct-1", terms(client_order_id="abc-1"), NOW)
    other = Order.create("acct-1", terms(client_order_id="abc-2"), NOW)
    assert first.id == second.id != other.id


def test_orders_without_a_client_order_id_get_distinct_ids() -> None:
    assert Order.create("acct-1", terms(), NOW).id != Order.create("acct-1", terms(), NOW).id


def test_pending_goes_to_placed_once() -> None:
    placed = Order.create("acct-1", terms(), NOW).placed("X1", NOW)
    assert placed.status is OrderStatus.PLACED
    assert placed.placed_at == NOW
    assert placed.exchange_order_id == "X1"
    assert placed.attempts == 1
    with pytest.raises(InvalidTransition):
        placed.placed("X2", NOW)
    with pytest.raises(InvalidTransition):
        placed.failed("late", NOW)


def test_failed_is_terminal_and_keeps_its_reason() -> None:
    failed = Order.create("acct-1", terms(), NOW).failed("exchange down", NOW)
    assert failed.failure_reason == "exchange down"
    with pytest.raises(InvalidTransition):
        failed.placed("X1", NOW)
    with pytest.raises(InvalidTransition):
        failed.attempt_failed("again", NOW)


def test_a_failed_attempt_keeps_the_order_pending_and_counts() -> None:
    order = Order.create("acct-1", terms(), NOW).attempt_failed("timeout", NOW).attempt_failed("timeout", NOW)
    assert order.status is OrderStatus.PENDING
    assert order.attempts == 2
    assert order.last_error == "timeout"


def test_transition_table_covers_every_status_and_terminal_ones_lead_nowhere() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)
    assert {s for s, targets in TRANSITIONS.items() if OrderStatus.PLACED in targets} == {OrderStatus.PENDING}
    assert TRANSITIONS[OrderStatus.FAILED] == frozenset()


def test_same_terms_compares_prices_by_value() -> None:
    order = Order.create("acct-1", terms(limit_price=Decimal("10.1")), NOW)
    assert order.has_same_terms(terms(limit_price=Decimal("10.10")))
    assert not order.has_same_terms(terms(limit_price=Decimal("10.11")))
    assert not order.has_same_terms(terms(side=Side.SELL, limit_price=Decimal("10.1")))


@pytest.mark.parametrize("candidate", ["", "abc", "../../etc", "6F1E4C0A-5A57-4C1B-9A5E-2B7F3D1C9E40", "x" * 3000])
def test_malformed_ids_are_not_order_ids(candidate: str) -> None:
    assert not is_order_id(candidate)
