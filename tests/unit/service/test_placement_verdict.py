"""Attempts used up: the order is failed only on the exchange's word, placed if the exchange holds it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from chalicelib.domain.model import OrderStatus, VenueOrderState
from chalicelib.service.placement import PlacementOutcome
from tests.unit.fakes import LEASE, SWEEP, FakeExchange, FakeQueue, FakeRepository
from tests.unit.helpers import T0, Clock, cancel, create, place
from tests.unit.helpers import limit_terms as terms

pytestmark = pytest.mark.unit


def exhaust(repo: FakeRepository, queue: FakeQueue, exchange: FakeExchange, clock: Clock) -> str:
    """Three attempts without an answer; returns the order id, pending."""
    order = create(repo, queue, terms(), clock=clock).order
    for attempt in (1, 2, 3):
        result = place(repo, order.id, exchange, receive_count=attempt, clock=clock)
    assert result.outcome is PlacementOutcome.AWAITING_VERDICT
    return order.id


def test_a_first_attempt_accepted_with_its_answer_lost_ends_placed_not_failed(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    # The chaos finding: accepted, answer lost, then a 503 on the last attempt.
    clock = Clock()
    exchange = FakeExchange(["lost", "unavailable", "unavailable"])
    order_id = exhaust(repo, queue, exchange, clock)
    assert repo.orders[order_id].status is OrderStatus.PENDING
    clock.now += LEASE
    result = place(repo, order_id, exchange, clock=clock)
    assert result.outcome is PlacementOutcome.PLACED
    placed = repo.orders[order_id]
    assert (placed.status, placed.exchange_order_id, placed.placed_at) == (OrderStatus.PLACED, "X1", clock.now)
    assert len(exchange.calls) == 3  # asked, not sent a fourth time


def test_the_exchange_state_is_taken_as_it_is_fills_included(repo: FakeRepository, queue: FakeQueue) -> None:
    clock = Clock()
    exchange = FakeExchange(["lost", "lost", "lost"])
    order_id = exhaust(repo, queue, exchange, clock)
    exchange.states[order_id] = VenueOrderState("X1", OrderStatus.PARTIALLY_FILLED, 4, 6, Decimal("99.10"))
    clock.now += LEASE
    assert place(repo, order_id, exchange, clock=clock).outcome is PlacementOutcome.PLACED
    order = repo.orders[order_id]
    assert (order.status, order.filled_quantity, order.average_fill_price) == (
        OrderStatus.PARTIALLY_FILLED,
        4,
        Decimal("99.10"),
    )


def test_no_verdict_is_asked_for_while_something_sent_may_still_land(repo: FakeRepository, queue: FakeQueue) -> None:
    clock = Clock()
    exchange = FakeExchange(["unavailable"] * 3)
    order_id = exhaust(repo, queue, exchange, clock)
    early = place(repo, order_id, exchange, clock=clock)  # e.g. a duplicate message
    assert early.outcome is PlacementOutcome.AWAITING_VERDICT
    assert early.retry_in_s >= 1
    assert exchange.status_calls == []
    # The sweep stands behind the message that asks again, well after it is due.
    assert repo.sweep_after[order_id] >= T0 + LEASE + SWEEP


def test_an_exchange_that_cannot_be_asked_is_asked_again_with_growing_backoff(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    clock = Clock()
    exchange = FakeExchange(["unavailable"] * 3)
    order_id = exhaust(repo, queue, exchange, clock)
    exchange.status_script = ["unavailable", "unavailable"]
    clock.now += LEASE
    delays = []
    for _ in range(2):
        result = place(repo, order_id, exchange, clock=clock)
        assert result.outcome is PlacementOutcome.AWAITING_VERDICT
        order = repo.orders[order_id]
        assert order.status is OrderStatus.PENDING  # never failed on a guess
        assert "order status query" in (order.last_error or "")
        assert repo.sweep_after[order_id] == clock.now + timedelta(seconds=result.retry_in_s) + SWEEP
        delays.append(result.retry_in_s)
        clock.now += timedelta(seconds=result.retry_in_s)
    assert delays[0] <= delays[1]
    assert place(repo, order_id, exchange, clock=clock).outcome is PlacementOutcome.FAILED
    assert len(exchange.status_calls) == 3


def test_a_cancel_while_awaiting_the_verdict_is_the_cancel_requests_to_settle(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    clock = Clock()
    exchange = FakeExchange(["unavailable"] * 3)
    order_id = exhaust(repo, queue, exchange, clock)
    assert cancel(repo, queue, order_id, "acct-1", clock=clock).status is OrderStatus.PENDING_CANCEL
    clock.now += LEASE
    assert place(repo, order_id, exchange, clock=clock).outcome is PlacementOutcome.ALREADY_SETTLED
    assert repo.orders[order_id].status is OrderStatus.PENDING_CANCEL
    assert exchange.status_calls == []
