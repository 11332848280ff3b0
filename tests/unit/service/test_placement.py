"""Placement against in-memory fakes: exactly once at the exchange, retries with backoff, then failed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.domain.model import OrderStatus
from chalicelib.service.placement import PlacementOutcome
from tests.unit.fakes import SWEEP, FakeExchange, FakeQueue, FakeRepository
from tests.unit.helpers import T0, Clock, create, place
from tests.unit.helpers import limit_terms as terms

pytestmark = pytest.mark.unit


def test_placement_places_and_leaves_the_sweep_index(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue, terms()).order
    exchange = FakeExchange()
    result = place(repo, order.id, exchange)
    assert result.outcome is PlacementOutcome.PLACED
    stored = repo.orders[order.id]
    assert stored.status is OrderStatus.PLACED
    assert stored.exchange_order_id == "X1"
    assert order.id not in repo.sweep_after


def test_a_duplicate_delivery_does_not_call_the_exchange_again(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue, terms()).order
    exchange = FakeExchange()
    place(repo, order.id, exchange)
    again = place(repo, order.id, exchange, receive_count=2)
    assert again.outcome is PlacementOutcome.ALREADY_SETTLED
    assert exchange.calls == [order.id]


def test_an_exchange_duplicate_rejection_counts_as_placed(repo: FakeRepository, queue: FakeQueue) -> None:
    """A worker died after the exchange accepted but before our write: the redelivery finishes the job."""
    order = create(repo, queue, terms()).order
    exchange = FakeExchange()
    exchange.accepted[order.id] = "X9"
    result = place(repo, order.id, exchange, receive_count=2)
    assert result.outcome is PlacementOutcome.PLACED
    assert repo.orders[order.id].exchange_order_id == "X9"


def test_unavailable_exchange_is_retried_with_growing_backoff_then_fails_once_the_exchange_says_unknown(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    order = create(repo, queue, terms()).order
    exchange = FakeExchange(["unavailable"] * 3)
    clock = Clock()
    first = place(repo, order.id, exchange, receive_count=1, clock=clock)
    second = place(repo, order.id, exchange, receive_count=2, clock=clock)
    third = place(repo, order.id, exchange, receive_count=3, clock=clock)
    assert (first.outcome, second.outcome, third.outcome) == (
        PlacementOutcome.RETRY,
        PlacementOutcome.RETRY,
        PlacementOutcome.AWAITING_VERDICT,  # not failed on a guess: asked once nothing sent can land
    )
    assert 1 <= first.retry_in_s <= 2 <= second.retry_in_s <= 4
    assert repo.orders[order.id].status is OrderStatus.PENDING
    clock.now += timedelta(seconds=third.retry_in_s)
    verdict = place(repo, order.id, exchange, receive_count=1, clock=clock)
    assert verdict.outcome is PlacementOutcome.FAILED
    stored = repo.orders[order.id]
    assert stored.status is OrderStatus.FAILED
    assert stored.attempts == 3
    assert stored.failure_reason is not None
    assert "after 3 attempts" in stored.failure_reason
    assert len(exchange.calls) == 3
    assert exchange.status_calls == [order.id]


def test_a_retry_pushes_the_sweep_past_the_backoff(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue, terms()).order
    result = place(repo, order.id, FakeExchange(["unavailable"]))
    assert repo.sweep_after[order.id] == T0 + timedelta(seconds=result.retry_in_s) + SWEEP


def test_attempts_stored_on_the_order_count_when_the_sweep_resent_the_message(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    order = create(repo, queue, terms()).order
    exchange = FakeExchange(["unavailable"] * 3)
    place(repo, order.id, exchange, receive_count=1)
    place(repo, order.id, exchange, receive_count=2)
    # The sweep's new message starts again at receive count 1: still the 3rd and last attempt.
    result = place(repo, order.id, exchange, receive_count=1)
    assert result.outcome is PlacementOutcome.AWAITING_VERDICT
    assert repo.orders[order.id].attempts == 3
    assert len(exchange.calls) == 3


def test_a_permanent_rejection_fails_at_once(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue, terms()).order
    result = place(repo, order.id, FakeExchange(["reject"]))
    assert result.outcome is PlacementOutcome.REJECTED
    assert repo.orders[order.id].status is OrderStatus.FAILED
    assert "unknown instrument" in (repo.orders[order.id].failure_reason or "")


def test_unknown_order_is_acknowledged(repo: FakeRepository) -> None:
    assert place(repo, "missing", FakeExchange()).outcome is PlacementOutcome.UNKNOWN_ORDER


def test_a_concurrent_write_is_reread_not_lost(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue, terms()).order

    class SweepingExchange(FakeExchange):
        def place(self, o):  # the sweep writes while the exchange call is in flight
            current = repo.orders[o.id]
            repo.update(current, sweep_after=T0 + timedelta(hours=1))
            return super().place(o)

    result = place(repo, order.id, SweepingExchange())
    assert result.outcome is PlacementOutcome.PLACED
    assert repo.orders[order.id].status is OrderStatus.PLACED
