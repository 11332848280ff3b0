"""Cancels, ownership and listing in the service layer, against in-memory fakes."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from chalicelib.adapters.repository import ConcurrentModification, OrderPage, OrderQuery
from chalicelib.domain.model import Order, OrderNotCancelable, OrderNotFound, OrderStatus
from chalicelib.service import client_orders
from chalicelib.service.exchange_cancel import CancelRequestOutcome
from chalicelib.service.placement import PlacementOutcome
from chalicelib.service.recovery import sweep_pending
from tests.unit import helpers
from tests.unit.fakes import LEASE, SWEEP, TIMINGS, FakeExchange, FakeQueue, FakeRepository, Fakes
from tests.unit.helpers import T0, Clock, ask_exchange, place
from tests.unit.helpers import limit_terms as terms

pytestmark = pytest.mark.unit

ALICE, BOB = "alice", "bob"


def create(repo: FakeRepository, queue: FakeQueue, account: str = ALICE, key: str | None = None) -> Order:
    return helpers.create(repo, queue, terms(key), account=account).order


def cancel(
    repo: FakeRepository, queue: FakeQueue, order_id: str, account: str = ALICE, clock: Clock | None = None
) -> Order:
    return helpers.cancel(repo, queue, order_id, account, clock)


def read(repo: FakeRepository, order_id: str, account: str) -> Order:
    return client_orders.get_order(order_id, account, Fakes(orders=repo).dependencies())


def sweep(repo: FakeRepository, queue: FakeQueue, clock: Clock) -> int:
    return sweep_pending(Fakes(orders=repo, queue=queue, clock=clock).dependencies(), limit=100)


def list_page(repo: FakeRepository, query: OrderQuery) -> OrderPage:
    return client_orders.list_orders(query, Fakes(orders=repo).dependencies())


def test_another_accounts_order_is_not_found_for_read_or_cancel(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue)
    assert read(repo, order.id, ALICE).id == order.id
    with pytest.raises(OrderNotFound):
        read(repo, order.id, BOB)
    with pytest.raises(OrderNotFound):
        cancel(repo, queue, order.id, account=BOB)
    assert repo.orders[order.id].status is OrderStatus.PENDING


def test_two_accounts_may_use_the_same_idempotency_key(repo: FakeRepository, queue: FakeQueue) -> None:
    mine, theirs = create(repo, queue, ALICE, "same-key"), create(repo, queue, BOB, "same-key")
    assert mine.id != theirs.id
    assert (mine.account_id, theirs.account_id) == (ALICE, BOB)


def test_a_canceled_pending_order_never_reaches_the_exchange(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue)
    canceled = cancel(repo, queue, order.id)
    assert canceled.status is OrderStatus.CANCELED
    assert queue.cancels == []  # nothing to ask the exchange
    assert order.id not in repo.sweep_after  # nothing left for the sweep either
    exchange = FakeExchange()
    # Its placement message was already in flight: delivered now, it does nothing.
    assert place(repo, order.id, exchange).outcome is PlacementOutcome.ALREADY_SETTLED
    assert exchange.calls == []
    assert repo.orders[order.id].placed_at is None


def test_a_cancel_while_the_placement_is_at_the_exchange_asks_the_exchange(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    order = create(repo, queue)
    exchange = FakeExchange()
    answers: list[Order] = []
    exchange.during_place.append(lambda: answers.append(cancel(repo, queue, order.id)))
    result = place(repo, order.id, exchange)
    assert answers[0].status is OrderStatus.PENDING_CANCEL
    assert queue.cancels == [order.id]
    # The placement landed: recorded, the order stays pending_cancel.
    assert result.outcome is PlacementOutcome.PLACED
    stored = repo.orders[order.id]
    assert (stored.status, stored.exchange_order_id, stored.placing_until) == (OrderStatus.PENDING_CANCEL, "X1", None)
    # The cancel message: the exchange cancels and confirms on its feed.
    assert ask_exchange(repo, order.id, exchange).outcome is CancelRequestOutcome.SENT
    assert exchange.canceled == {order.id}


def test_a_cancel_during_an_attempt_that_fails_ends_canceled_without_the_exchange(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    order = create(repo, queue)
    exchange = FakeExchange(["unavailable"])
    exchange.during_place.append(lambda: cancel(repo, queue, order.id))
    result = place(repo, order.id, exchange)
    assert result.outcome is PlacementOutcome.ALREADY_SETTLED  # no retry of a pending_cancel order
    stored = repo.orders[order.id]
    assert (stored.status, stored.placing_until) == (OrderStatus.PENDING_CANCEL, None)
    # The failure may have been a timeout: "unknown order" counts only after the lease.
    assert ask_exchange(repo, order.id, exchange).outcome is CancelRequestOutcome.WAIT
    later = Clock()
    later.now = T0 + LEASE
    asked = ask_exchange(repo, order.id, exchange, clock=later)
    assert asked.outcome is CancelRequestOutcome.CANCELED_UNPLACED
    assert repo.orders[order.id].status is OrderStatus.CANCELED
    assert order.id not in exchange.accepted


def test_unknown_order_is_believed_only_once_nothing_sent_can_still_land(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    order = create(repo, queue)
    clock = Clock()
    repo.update(repo.orders[order.id].claimed_for_placement(T0, T0 + LEASE), sweep_after=T0 + LEASE + SWEEP)
    cancel(repo, queue, order.id, clock=clock)
    exchange = FakeExchange()
    waited = ask_exchange(repo, order.id, exchange, clock=clock)
    # Asked at once ("unknown order"), but the placement may still arrive: ask again later.
    assert (waited.outcome, waited.retry_in_s) == (CancelRequestOutcome.WAIT, 15)
    assert exchange.cancel_calls == [order.id]
    clock.now = T0 + LEASE
    assert ask_exchange(repo, order.id, exchange, clock=clock).outcome is CancelRequestOutcome.CANCELED_UNPLACED


def test_a_placement_that_timed_out_and_landed_late_is_canceled_at_the_exchange(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    order = create(repo, queue)
    exchange = FakeExchange(["unavailable"])  # our read timed out...
    assert place(repo, order.id, exchange).outcome is PlacementOutcome.RETRY
    assert cancel(repo, queue, order.id).status is OrderStatus.PENDING_CANCEL
    assert ask_exchange(repo, order.id, exchange).outcome is CancelRequestOutcome.WAIT
    exchange.accepted[order.id] = "X7"  # ...and the exchange took the order after all
    later = Clock()
    later.now = T0 + LEASE
    assert ask_exchange(repo, order.id, exchange, clock=later).outcome is CancelRequestOutcome.SENT
    assert exchange.canceled == {order.id}
    assert repo.orders[order.id].status is OrderStatus.PENDING_CANCEL  # until the feed says canceled


def test_our_own_claim_whose_answer_was_lost_still_places(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue)
    commit_then_conflict(repo)
    exchange = FakeExchange()
    result = place(repo, order.id, exchange)
    assert result.outcome is PlacementOutcome.PLACED
    assert exchange.calls == [order.id]


def test_our_own_cancel_whose_answer_was_lost_is_still_a_cancel(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue)
    commit_then_conflict(repo)
    assert cancel(repo, queue, order.id).status is OrderStatus.CANCELED


def commit_then_conflict(repo: FakeRepository) -> None:
    """The next update commits, then reports a conflict: its answer was lost and the client's retry met it."""
    original = repo.update

    def update(order: Order, sweep_after: datetime | None) -> Order:
        repo.update = original  # type: ignore[method-assign]
        original(order, sweep_after)
        raise ConcurrentModification(order.id)

    repo.update = update  # type: ignore[method-assign]


def test_a_placed_order_is_pending_cancel_until_the_exchange_says(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue)
    exchange = FakeExchange()
    place(repo, order.id, exchange)
    answered = cancel(repo, queue, order.id)
    assert answered.status is OrderStatus.PENDING_CANCEL
    assert queue.cancels == [order.id]
    assert cancel(repo, queue, order.id).status is OrderStatus.PENDING_CANCEL  # a repeat
    assert queue.cancels == [order.id]  # within the resend interval: no second message (test_cancel_interval.py)
    assert ask_exchange(repo, order.id, exchange).outcome is CancelRequestOutcome.SENT
    assert ask_exchange(repo, order.id, exchange).outcome is CancelRequestOutcome.SENT_RECENTLY  # a redelivery
    later = Clock(T0 + TIMINGS.cancel_resend_interval)
    assert ask_exchange(repo, order.id, exchange, clock=later).outcome is CancelRequestOutcome.TOO_LATE
    assert repo.orders[order.id].status is OrderStatus.PENDING_CANCEL  # the feed settles it
    # Should the feed's final report never be applied, the sweep asks again, less often.
    assert repo.sweep_after[order.id] == later.now + 10 * SWEEP


def test_an_unreachable_exchange_is_asked_again_then_left_to_the_sweep(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue)
    exchange = FakeExchange(cancel_script=["unavailable"] * 3)
    place(repo, order.id, exchange)
    cancel(repo, queue, order.id)
    first = ask_exchange(repo, order.id, exchange, receive_count=1)
    assert (first.outcome, first.retry_in_s >= TIMINGS.cancel_resend_interval.total_seconds()) == (
        CancelRequestOutcome.RETRY,
        True,
    )  # back after the resend interval, or it would find its own send recent
    retried = Clock(T0 + timedelta(seconds=first.retry_in_s))
    last = ask_exchange(repo, order.id, exchange, receive_count=3, clock=retried)
    assert last.outcome is CancelRequestOutcome.LEFT_TO_SWEEP
    assert repo.sweep_after[order.id] > T0 + SWEEP
    # The sweep sends a fresh cancel message once that time has passed.
    later = Clock()
    later.now = repo.sweep_after[order.id] + timedelta(seconds=1)
    queue.cancels.clear()
    assert sweep(repo, queue, later) == 1
    assert queue.cancels == [order.id]


def test_a_done_order_answers_not_cancelable(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue)
    cancel(repo, queue, order.id)
    with pytest.raises(OrderNotCancelable):
        cancel(repo, queue, order.id)


def test_a_cancel_with_the_queue_down_is_sent_by_the_sweep(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue)
    place(repo, order.id, FakeExchange())
    queue.down = True
    assert cancel(repo, queue, order.id).status is OrderStatus.PENDING_CANCEL
    queue.down = False
    later = Clock()
    later.now = T0 + SWEEP + timedelta(seconds=1)
    assert sweep(repo, queue, later) == 1
    assert queue.cancels == [order.id]


def test_the_list_is_the_accounts_own_newest_first(repo: FakeRepository, queue: FakeQueue) -> None:
    clock = Clock()
    mine = []
    dependencies = Fakes(orders=repo, queue=queue, clock=clock).dependencies()
    for minute in range(3):
        clock.now = T0 + timedelta(minutes=minute)
        mine.append(client_orders.create_order(ALICE, terms(), dependencies).order)
    client_orders.create_order(BOB, terms(), dependencies)
    page = list_page(repo, OrderQuery(account_id=ALICE, limit=2))
    assert [o.id for o in page.orders] == [mine[2].id, mine[1].id]
    rest = list_page(repo, OrderQuery(account_id=ALICE, limit=2, cursor=page.next))
    assert [o.id for o in rest.orders] == [mine[0].id]
    assert rest.next is None
