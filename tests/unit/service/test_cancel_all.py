"""DELETE /orders' service: every open order of the account canceled as the single cancel would, within bounds."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.model import Order, OrderNotFound, OrderStatus
from chalicelib.service import client_orders
from chalicelib.service.cancel_all import CancelAll, CancelVerdict, cancel_all_orders
from tests.unit import helpers
from tests.unit.fakes import FakeExchange, FakeQueue, FakeRepository, Fakes
from tests.unit.helpers import T0, Clock, place
from tests.unit.helpers import limit_terms as terms

pytestmark = pytest.mark.unit

ALICE, BOB = "alice", "bob"


def create(repo: FakeRepository, queue: FakeQueue, account: str = ALICE, key: str | None = None) -> Order:
    return helpers.create(repo, queue, terms(key), account=account).order


def placed(repo: FakeRepository, queue: FakeQueue, account: str = ALICE) -> Order:
    order = create(repo, queue, account)
    place(repo, order.id, FakeExchange())
    assert repo.orders[order.id].status is OrderStatus.PLACED
    return repo.orders[order.id]


def cancel_all(
    repo: FakeRepository,
    queue: FakeQueue,
    account: str = ALICE,
    after: str | None = None,
    max_orders: int = 100,
    clock: Clock | None = None,
) -> CancelAll:
    dependencies = Fakes(orders=repo, queue=queue, clock=clock or Clock()).dependencies()
    return cancel_all_orders(account, dependencies, after=after, max_orders=max_orders)


def verdicts(outcome: CancelAll) -> dict[str, CancelVerdict]:
    return {cancel.order.id: cancel.verdict for cancel in outcome.cancels}


def test_each_open_order_is_canceled_as_its_own_cancel_would_and_other_accounts_are_untouched(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    never_sent, live = create(repo, queue), placed(repo, queue)
    done = create(repo, queue)
    helpers.cancel(repo, queue, done.id, ALICE)
    theirs = placed(repo, queue, BOB)

    outcome = cancel_all(repo, queue)

    assert verdicts(outcome) == {never_sent.id: CancelVerdict.CANCELED, live.id: CancelVerdict.PENDING_CANCEL}
    assert outcome.resume_after is None
    by_id = {cancel.order.id: cancel.order for cancel in outcome.cancels}
    assert by_id[never_sent.id] == repo.orders[never_sent.id]  # the order as stored after the cancel
    assert repo.orders[never_sent.id].status is OrderStatus.CANCELED
    assert repo.orders[live.id].status is OrderStatus.PENDING_CANCEL
    assert queue.cancels == [live.id]  # only the order the exchange holds is asked for
    assert repo.orders[theirs.id].status is OrderStatus.PLACED


def test_repeating_it_answers_pending_cancel_again_without_asking_the_exchange_again(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    live, never_sent = placed(repo, queue), create(repo, queue)
    first = cancel_all(repo, queue)
    second = cancel_all(repo, queue)
    assert verdicts(first) == {live.id: CancelVerdict.PENDING_CANCEL, never_sent.id: CancelVerdict.CANCELED}
    assert verdicts(second) == {live.id: CancelVerdict.PENDING_CANCEL}  # the canceled one is not open any more
    assert queue.cancels == [live.id]  # within the cancel interval: one request to the exchange
    # After the interval a repeat queues one more, exactly as DELETE /orders/{id} does.
    later = Clock(T0 + timedelta(seconds=30))
    assert verdicts(cancel_all(repo, queue, clock=later)) == {live.id: CancelVerdict.PENDING_CANCEL}
    assert queue.cancels == [live.id, live.id]


def test_no_open_orders_is_an_empty_answer_with_nothing_left(repo: FakeRepository, queue: FakeQueue) -> None:
    placed(repo, queue, BOB)
    assert cancel_all(repo, queue) == CancelAll(cancels=[], resume_after=None)


def test_a_large_book_is_done_a_bounded_part_at_a_time_going_on_after_the_last_one(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    ids = sorted(create(repo, queue).id for _ in range(5))
    first = cancel_all(repo, queue, max_orders=2)
    assert [c.order.id for c in first.cancels] == ids[:2]
    assert first.resume_after == ids[1]
    second = cancel_all(repo, queue, after=first.resume_after, max_orders=2)
    assert [c.order.id for c in second.cancels] == ids[2:4]
    assert second.resume_after == ids[3]
    last = cancel_all(repo, queue, after=second.resume_after, max_orders=2)
    assert [c.order.id for c in last.cancels] == ids[4:]
    assert last.resume_after is None
    assert all(repo.orders[i].status is OrderStatus.CANCELED for i in ids)


def test_exactly_a_full_batch_says_nothing_is_left(repo: FakeRepository, queue: FakeQueue) -> None:
    for _ in range(3):
        create(repo, queue)
    assert cancel_all(repo, queue, max_orders=3).resume_after is None


class SteppingClock:
    """Each reading is `step` later than the one before: every cancel takes that long."""

    def __init__(self, step: timedelta) -> None:
        self.now, self.step = T0, step

    def __call__(self) -> datetime:
        now = self.now
        self.now += self.step
        return now


def test_it_stops_at_its_time_budget_after_at_least_one_order_and_says_where_to_go_on(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    ids = sorted(create(repo, queue).id for _ in range(4))
    # Every reading 3 s on: the 5 s budget is used up after the first cancel.
    slow = Fakes(orders=repo, queue=queue, clock=SteppingClock(timedelta(seconds=3))).dependencies()
    outcome = cancel_all_orders(ALICE, slow)
    assert [c.order.id for c in outcome.cancels] == ids[:1]
    assert outcome.resume_after == ids[0]
    # Even a clock far past the budget cancels one order per request: repeating always gets on.
    stuck = Fakes(orders=repo, queue=queue, clock=SteppingClock(timedelta(hours=1))).dependencies()
    assert [c.order.id for c in cancel_all_orders(ALICE, stuck, after=ids[0]).cancels] == ids[1:2]


class FailingUpdates(FakeRepository):
    """Writes of some orders fail as an unreachable table does; the rest of the store works."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()

    def update(self, order: Order, sweep_after: datetime | None) -> Order:
        if order.id in self.failing:
            raise StorageUnavailable(order.id)
        return super().update(order, sweep_after)


def test_one_orders_storage_failure_is_its_own_result_and_the_others_go_on(queue: FakeQueue) -> None:
    repo = FailingUpdates()
    orders = [create(repo, queue) for _ in range(3)]
    broken = orders[1]
    repo.failing.add(broken.id)
    outcome = cancel_all(repo, queue)
    assert verdicts(outcome) == {
        orders[0].id: CancelVerdict.CANCELED,
        broken.id: CancelVerdict.UNAVAILABLE,
        orders[2].id: CancelVerdict.CANCELED,
    }
    assert repo.orders[broken.id].status is OrderStatus.PENDING
    assert next(c.order for c in outcome.cancels if c.order.id == broken.id) == broken  # as read


def test_when_the_open_orders_cannot_be_listed_nothing_is_canceled(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue)
    repo.down = True
    with pytest.raises(StorageUnavailable):
        cancel_all(repo, queue)
    repo.down = False
    assert repo.orders[order.id].status is OrderStatus.PENDING


class LaggingIndex(FakeRepository):
    """The open-orders index as DynamoDB's may be for a moment: it still lists orders done since."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: list[str] = []

    def open_order_ids(self, account_id: str, after: str | None, limit: int) -> list[str]:
        return sorted(i for i in self.listed if after is None or i > after)[:limit]


def test_an_order_done_since_the_index_listed_it_answers_409_with_its_status(queue: FakeQueue) -> None:
    repo = LaggingIndex()
    filled = create(repo, queue)
    repo.orders[filled.id] = dataclasses.replace(repo.orders[filled.id], status=OrderStatus.FILLED)
    repo.listed = [filled.id, "00000000-0000-4000-8000-000000000000"]  # and one the table never had
    outcome = cancel_all(repo, queue)
    assert [(c.order.id, c.verdict, c.done_status) for c in outcome.cancels] == [
        (filled.id, CancelVerdict.NOT_CANCELABLE, OrderStatus.FILLED)
    ]
    assert outcome.cancels[0].order.status is OrderStatus.FILLED


# --- GET /orders/by-client-order-id/{client_order_id} -------------------------------------------


def test_an_order_is_found_by_its_client_order_id_for_its_own_account_only(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    mine = create(repo, queue, ALICE, "key-1")
    theirs = create(repo, queue, BOB, "key-1")
    dependencies = Fakes(orders=repo).dependencies()
    assert client_orders.get_order_by_client_order_id("key-1", ALICE, dependencies) == repo.orders[mine.id]
    assert client_orders.get_order_by_client_order_id("key-1", BOB, dependencies) == repo.orders[theirs.id]
    for key, account in (("key-2", ALICE), ("key-1", "carol")):
        with pytest.raises(OrderNotFound):
            client_orders.get_order_by_client_order_id(key, account, dependencies)
