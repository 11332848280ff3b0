"""A replacement that ends without the exchange frees its original: where that happens, and the nets under it."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from chalicelib.domain.model import ExecType, ExecutionReport, InvalidTransition, OrderStatus
from chalicelib.domain.order_events import OrderChange, OrderEventType, derive_events
from chalicelib.domain.replace import TermChanges, replacement_for, replacement_terms
from chalicelib.service.reconciliation import Check, reconcile_orders
from tests.unit.fakes import FakeExchange, Fakes
from tests.unit.venue import T0, market_order

pytestmark = pytest.mark.unit


def pending_replace(fakes: Fakes, filled: int = 0) -> tuple[str, str]:
    """An original (placed at the exchange) and its replacement, stored as the replace stores them."""
    original = fakes.orders.add(market_order(10), sweep_after=T0)
    original = fakes.orders.update(
        dataclasses.replace(original.placed("X1", T0), filled_quantity=filled), sweep_after=None
    )
    replacement = replacement_for(original, replacement_terms(original, TermChanges(quantity=12)), T0, None)
    fakes.orders.add_replacement(replacement, original.replace_requested(replacement.id, T0), sweep_after=T0)
    return original.id, replacement.id


def test_the_reconciler_frees_an_original_whose_replacement_ended_and_whose_release_was_lost() -> None:
    fakes = Fakes(clock=lambda: T0 + timedelta(minutes=5))
    original_id, replacement_id = pending_replace(fakes, filled=4)
    # The client's cancel of the never-sent replacement committed; the release after it did not.
    replacement = fakes.orders.orders[replacement_id]
    fakes.orders.update(replacement.cancel_requested(T0), sweep_after=None)
    fakes.exchange = FakeExchange()
    fakes.exchange.accepted[original_id] = "X1"

    checks = reconcile_orders(fakes.dependencies(), limit=100, failed_window=timedelta(hours=1)).checks

    original = fakes.orders.orders[original_id]
    assert (original.status, original.replaced_by) == (OrderStatus.PARTIALLY_FILLED, None)
    assert checks[Check.REPAIRED] == 1


def test_the_reconciler_frees_a_pending_cancel_original_of_an_ended_replacement_too() -> None:
    fakes = Fakes(clock=lambda: T0 + timedelta(minutes=5))
    original_id, replacement_id = pending_replace(fakes)
    fakes.orders.update(fakes.orders.orders[original_id].cancel_requested(T0), sweep_after=None)
    fakes.orders.update(fakes.orders.orders[replacement_id].cancel_requested(T0), sweep_after=None)
    fakes.exchange = FakeExchange()
    fakes.exchange.accepted[original_id] = "X1"
    reconcile_orders(fakes.dependencies(), limit=100, failed_window=timedelta(hours=1))
    original = fakes.orders.orders[original_id]
    assert (original.status, original.replaced_by) == (OrderStatus.PENDING_CANCEL, None)


def test_the_reconciler_leaves_a_replace_in_flight_alone() -> None:
    fakes = Fakes(clock=lambda: T0 + timedelta(minutes=5))
    original_id, replacement_id = pending_replace(fakes)
    fakes.exchange = FakeExchange()
    fakes.exchange.accepted[original_id] = "X1"
    reconcile_orders(fakes.dependencies(), limit=100, failed_window=timedelta(hours=1))
    assert fakes.orders.orders[original_id].status is OrderStatus.PENDING_REPLACE
    assert fakes.orders.orders[original_id].replaced_by == replacement_id


def test_a_failed_replacement_is_never_redriven() -> None:
    fakes = Fakes()
    _, replacement_id = pending_replace(fakes)
    failed = fakes.orders.orders[replacement_id].failed("exchange unavailable after 3 attempts", T0)
    with pytest.raises(InvalidTransition):
        failed.reopened(T0, by="ops")


def test_a_replacements_carried_fills_are_not_announced_again() -> None:
    fakes = Fakes()
    _, replacement_id = pending_replace(fakes, filled=4)
    before = fakes.orders.orders[replacement_id]
    new = ExecutionReport(
        exec_id="E9",
        order_id=replacement_id,
        exchange_order_id="X2",
        exec_type=ExecType.NEW,
        last_qty=0,
        last_price=None,
        cum_qty=4,
        leaves_qty=8,
        avg_price=None,
        transact_time=T0,
        seq=9,
    )
    after = dataclasses.replace(before.apply_executions([new], T0), version=before.version + 1)
    assert after.filled_quantity == 4
    events = derive_events(OrderChange(before, after), [new])
    assert [event.type for event in events] == [OrderEventType.PLACED]
    # Filled beyond what it carried, its report not stored (the reconciler's repair): that is its own fill.
    repaired = dataclasses.replace(after, filled_quantity=7, version=after.version + 1)
    events = derive_events(OrderChange(before, repaired), [new])
    assert (events[0].type, events[0].order.filled_quantity) == (OrderEventType.PARTIAL_FILL, 7)
