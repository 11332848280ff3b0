"""The service layer against in-memory fakes: creation, idempotency, placement, sweep."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.model import IdempotencyConflict, OrderNotFound, OrderStatus, OrderTerms, OrderType, Side
from chalicelib.domain.retry import RetryPolicy
from chalicelib.service import orders
from chalicelib.service.orders import PlacementOutcome
from tests.unit.fakes import FakeExchange, FakeQueue, FakeRepository

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SWEEP = timedelta(seconds=60)
LEASE = timedelta(seconds=15)
ACCOUNT = "acct-1"
POLICY = RetryPolicy(max_attempts=3, backoff_base_s=2, backoff_max_s=900)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def terms(client_order_id: str | None = None, quantity: int = 10) -> OrderTerms:
    return OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", quantity, Decimal("99.5"), client_order_id)


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository()


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue()


def create(repo: FakeRepository, queue: FakeQueue, t: OrderTerms, clock: Clock | None = None) -> orders.CreatedOrder:
    # Each call is its own request, with its own correlation id.
    return orders.create_order(ACCOUNT, t, repo, queue, SWEEP, clock or Clock(), correlation_id=str(uuid.uuid4()))


def place(repo, order_id, exchange, receive_count=1, clock=None):
    return orders.place_order(
        order_id, receive_count, repo, exchange, POLICY, SWEEP, LEASE, clock or Clock(), random.Random(0)
    )


def test_create_stores_pending_and_enqueues(repo: FakeRepository, queue: FakeQueue) -> None:
    result = create(repo, queue, terms())
    assert result.created
    assert repo.orders[result.order.id].status is OrderStatus.PENDING
    assert queue.sent == [result.order.id]
    assert repo.sweep_after[result.order.id] == T0 + SWEEP


def test_create_with_the_same_key_returns_the_same_order_once(repo: FakeRepository, queue: FakeQueue) -> None:
    first = create(repo, queue, terms("key-1"))
    again = create(repo, queue, terms("key-1"))
    assert not again.created
    assert again.order.id == first.order.id
    assert len(repo.orders) == 1
    assert queue.sent == [first.order.id]


def test_the_same_key_with_other_terms_is_a_conflict(repo: FakeRepository, queue: FakeQueue) -> None:
    create(repo, queue, terms("key-1"))
    with pytest.raises(IdempotencyConflict, match="key-1"):
        create(repo, queue, terms("key-1", quantity=11))
    assert len(repo.orders) == 1


def test_store_down_stores_and_sends_nothing(repo: FakeRepository, queue: FakeQueue) -> None:
    repo.down = True
    with pytest.raises(StorageUnavailable):
        create(repo, queue, terms())
    assert queue.sent == []


def test_queue_down_still_creates_the_order_for_the_sweep(repo: FakeRepository, queue: FakeQueue) -> None:
    queue.down = True
    result = create(repo, queue, terms())
    assert result.created
    assert repo.pending_due_for_sweep(T0 + SWEEP + timedelta(seconds=1), 10) == [result.order.id]


def test_get_unknown_order(repo: FakeRepository) -> None:
    with pytest.raises(OrderNotFound):
        orders.get_order("nope", ACCOUNT, repo)


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


def test_unavailable_exchange_is_retried_with_growing_backoff_then_fails(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    order = create(repo, queue, terms()).order
    exchange = FakeExchange(["unavailable"] * 3)
    first = place(repo, order.id, exchange, receive_count=1)
    second = place(repo, order.id, exchange, receive_count=2)
    third = place(repo, order.id, exchange, receive_count=3)
    assert (first.outcome, second.outcome, third.outcome) == (
        PlacementOutcome.RETRY,
        PlacementOutcome.RETRY,
        PlacementOutcome.FAILED,
    )
    assert 1 <= first.retry_in_s <= 2 <= second.retry_in_s <= 4
    stored = repo.orders[order.id]
    assert stored.status is OrderStatus.FAILED
    assert stored.attempts == 3
    assert stored.failure_reason is not None
    assert "after 3 attempts" in stored.failure_reason
    assert len(exchange.calls) == 3


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
    assert result.outcome is PlacementOutcome.FAILED
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


def test_sweep_resends_only_stuck_orders_once_per_period(repo: FakeRepository, queue: FakeQueue) -> None:
    clock = Clock()
    stuck = create(repo, queue, terms(), clock).order
    clock.now = T0 + timedelta(seconds=30)
    fresh = create(repo, queue, terms(), clock).order
    placed = create(repo, queue, terms(), clock).order
    place(repo, placed.id, FakeExchange())
    queue.sent.clear()

    clock.now = T0 + SWEEP + timedelta(seconds=1)
    assert orders.sweep_pending(repo, queue, SWEEP, 100, clock) == 1
    assert queue.sent == [stuck.id]
    assert orders.sweep_pending(repo, queue, SWEEP, 100, clock) == 0  # not again right away
    clock.now = T0 + 3 * SWEEP
    assert sorted(queue.sent[1:]) == []
    assert orders.sweep_pending(repo, queue, SWEEP, 100, clock) == 2
    assert sorted(queue.sent[1:]) == sorted([stuck.id, fresh.id])


def test_an_operator_reopens_a_failed_order_once(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue, terms()).order
    for attempt in (1, 2, 3):
        place(repo, order.id, FakeExchange(["unavailable"]), receive_count=attempt)
    assert repo.orders[order.id].status is OrderStatus.FAILED
    queue.sent.clear()

    assert orders.reopen_failed_order(order.id, repo, queue, SWEEP, Clock())
    reopened = repo.orders[order.id]
    assert (reopened.status, reopened.attempts, reopened.failure_reason) == (OrderStatus.PENDING, 0, None)
    assert queue.sent == [order.id]
    assert not orders.reopen_failed_order(order.id, repo, queue, SWEEP, Clock())  # idempotent
    assert queue.sent == [order.id]

    assert place(repo, order.id, FakeExchange(), receive_count=1).outcome is PlacementOutcome.PLACED


def test_only_failed_orders_reopen(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue, terms()).order
    place(repo, order.id, FakeExchange())
    assert not orders.reopen_failed_order(order.id, repo, queue, SWEEP, Clock())
    assert not orders.reopen_failed_order("unknown", repo, queue, SWEEP, Clock())
    assert repo.orders[order.id].status is OrderStatus.PLACED


class LostAnswerRepository(FakeRepository):
    """Commits the write, then fails the way a read timeout does; optionally the client retries."""

    def __init__(self, client_retries: bool) -> None:
        super().__init__()
        self.client_retries = client_retries

    def add(self, order, sweep_after):
        super().add(order, sweep_after)
        if self.client_retries:
            return super().add(order, sweep_after)  # refused: OrderAlreadyExists
        raise StorageUnavailable("read timeout")


@pytest.mark.parametrize("client_retries", [True, False])
def test_a_write_whose_answer_was_lost_is_still_created_and_enqueued(queue: FakeQueue, client_retries: bool) -> None:
    repo = LostAnswerRepository(client_retries)
    result = orders.create_order(ACCOUNT, terms("key-9"), repo, queue, SWEEP, Clock(), correlation_id="c-1")
    assert result.created
    assert queue.sent == [result.order.id]
    assert len(repo.orders) == 1
