"""The client's use cases against in-memory fakes: creation, idempotency, reading."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.model import IdempotencyConflict, OrderNotFound, OrderStatus
from chalicelib.service.client_orders import create_order, get_order
from tests.unit.fakes import SWEEP, FakeQueue, FakeRepository, Fakes
from tests.unit.helpers import T0, Clock, create
from tests.unit.helpers import limit_terms as terms

pytestmark = pytest.mark.unit

ACCOUNT = "acct-1"  # the account helpers.create() creates for


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
        get_order("nope", ACCOUNT, Fakes(orders=repo).dependencies())


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


class UnreachableAfterWriteRepository(FakeRepository):
    """Commits the write, loses its answer, then fails the next `failing_reads` look-ups as the outage goes on."""

    def __init__(self, failing_reads: int, commit: bool = True) -> None:
        super().__init__()
        self.failing_reads = failing_reads
        self.commit = commit
        self.reads = 0

    def add(self, order, sweep_after):
        if self.commit:
            super().add(order, sweep_after)
        raise StorageUnavailable("connection reset")

    def get(self, order_id):
        self.reads += 1
        if self.reads <= self.failing_reads:
            raise StorageUnavailable("connection refused")
        return super().get(order_id)


def test_a_lost_write_answer_is_read_back_until_the_table_answers() -> None:
    """An outage loses the write's answer and the first looks too: still 201, never a 500 for a stored order."""
    fakes = Fakes(orders=UnreachableAfterWriteRepository(failing_reads=3))
    result = create_order(ACCOUNT, terms("key-10"), fakes.dependencies(), correlation_id="c-1")
    assert result.created
    assert fakes.queue.sent == [result.order.id]
    assert fakes.sleeps == [0.1, 0.2, 0.4]


def test_a_lost_write_that_did_not_commit_is_a_500_as_soon_as_the_table_answers() -> None:
    fakes = Fakes(orders=UnreachableAfterWriteRepository(failing_reads=1, commit=False))
    with pytest.raises(StorageUnavailable):
        create_order(ACCOUNT, terms("key-11"), fakes.dependencies(), correlation_id="c-1")
    assert fakes.sleeps == [0.1]
    assert fakes.queue.sent == []


def test_a_table_unreachable_for_the_whole_read_back_is_a_500_within_its_bound() -> None:
    fakes = Fakes(orders=UnreachableAfterWriteRepository(failing_reads=1_000))
    with pytest.raises(StorageUnavailable):
        create_order(ACCOUNT, terms("key-12"), fakes.dependencies(), correlation_id="c-1")
    # The pauses fill the budget and no more: the last one is cut to what is left.
    assert fakes.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 1.9])
    assert sum(fakes.sleeps) == pytest.approx(fakes.timings.write_read_back.total_seconds())
    assert fakes.queue.sent == []


@pytest.mark.parametrize("client_retries", [True, False])
def test_a_write_whose_answer_was_lost_is_still_created_and_enqueued(queue: FakeQueue, client_retries: bool) -> None:
    repo = LostAnswerRepository(client_retries)
    dependencies = Fakes(orders=repo, queue=queue, clock=Clock()).dependencies()
    result = create_order(ACCOUNT, terms("key-9"), dependencies, correlation_id="c-1")
    assert result.created
    assert queue.sent == [result.order.id]
    assert len(repo.orders) == 1
