"""The sweep and an operator's reopen against in-memory fakes: stuck orders sent again, once per period."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.domain.model import OrderStatus
from chalicelib.service.placement import PlacementOutcome
from chalicelib.service.recovery import reopen_failed_order, sweep_pending
from tests.unit.fakes import LEASE, SWEEP, FakeExchange, FakeQueue, FakeRepository, Fakes
from tests.unit.helpers import T0, Clock, create, place
from tests.unit.helpers import limit_terms as terms

pytestmark = pytest.mark.unit


def sweep(repo: FakeRepository, queue: FakeQueue, clock: Clock) -> int:
    return sweep_pending(Fakes(orders=repo, queue=queue, clock=clock).dependencies(), limit=100)


def reopen(repo: FakeRepository, queue: FakeQueue, order_id: str) -> bool:
    return reopen_failed_order(order_id, Fakes(orders=repo, queue=queue, clock=Clock()).dependencies(), by="ops-test")


def test_sweep_resends_only_stuck_orders_once_per_period(repo: FakeRepository, queue: FakeQueue) -> None:
    clock = Clock()
    stuck = create(repo, queue, terms(), clock).order
    clock.now = T0 + timedelta(seconds=30)
    fresh = create(repo, queue, terms(), clock).order
    placed = create(repo, queue, terms(), clock).order
    place(repo, placed.id, FakeExchange())
    queue.sent.clear()

    clock.now = T0 + SWEEP + timedelta(seconds=1)
    assert sweep(repo, queue, clock) == 1
    assert queue.sent == [stuck.id]
    assert sweep(repo, queue, clock) == 0  # not again right away
    clock.now = T0 + 3 * SWEEP
    assert sorted(queue.sent[1:]) == []
    assert sweep(repo, queue, clock) == 2
    assert sorted(queue.sent[1:]) == sorted([stuck.id, fresh.id])


def test_an_operator_reopens_a_failed_order_once(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue, terms()).order
    for attempt in (1, 2, 3):
        place(repo, order.id, FakeExchange(["unavailable"]), receive_count=attempt)
    # The exchange is asked once nothing sent can still land; it does not know the order.
    place(repo, order.id, FakeExchange(), clock=Clock(T0 + LEASE))
    assert repo.orders[order.id].status is OrderStatus.FAILED
    queue.sent.clear()

    assert reopen(repo, queue, order.id)
    reopened = repo.orders[order.id]
    assert (reopened.status, reopened.attempts, reopened.failure_reason) == (OrderStatus.PENDING, 0, None)
    assert queue.sent == [order.id]
    assert not reopen(repo, queue, order.id)  # idempotent
    assert queue.sent == [order.id]

    assert place(repo, order.id, FakeExchange(), receive_count=1).outcome is PlacementOutcome.PLACED


def test_only_failed_orders_reopen(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue, terms()).order
    place(repo, order.id, FakeExchange())
    assert not reopen(repo, queue, order.id)
    assert not reopen(repo, queue, "unknown")
    assert repo.orders[order.id].status is OrderStatus.PLACED
