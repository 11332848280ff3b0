"""Cancels, ownership and listing in the domain and the service layer, against in-memory fakes."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.adapters.repository import ConcurrentModification, OrderQuery
from chalicelib.domain.model import (
    InvalidTransition,
    Order,
    OrderNotCancelable,
    OrderNotFound,
    OrderStatus,
    OrderTerms,
    OrderType,
    Side,
    order_id_for_client_key,
)
from chalicelib.domain.retry import RetryPolicy
from chalicelib.service import orders
from chalicelib.service.orders import CancelRequestOutcome, PlacementOutcome
from tests.unit.fakes import FakeExchange, FakeQueue, FakeRepository

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SWEEP = timedelta(seconds=60)
LEASE = timedelta(seconds=15)
POLICY = RetryPolicy(max_attempts=3, backoff_base_s=2, backoff_max_s=900)
ALICE, BOB = "alice", "bob"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def terms(client_order_id: str | None = None, instrument: str = "US0378331005", side: Side = Side.BUY) -> OrderTerms:
    return OrderTerms(OrderType.LIMIT, side, instrument, 10, Decimal("99.5"), client_order_id)


def an_order(status: OrderStatus = OrderStatus.PENDING, **changes: object) -> Order:
    return replace(Order.create(ALICE, terms(), T0), status=status, **changes)  # type: ignore[arg-type]


# --- The domain ------------------------------------------------------------------


def test_a_pending_order_no_attempt_has_sent_is_canceled_at_once() -> None:
    assert an_order().cancel_requested(T0).status is OrderStatus.CANCELED


CLAIMED = an_order().claimed_for_placement(T0, T0 + LEASE)
LATER = T0 + 10 * LEASE


@pytest.mark.parametrize(
    ("order", "at"),
    [
        (CLAIMED, T0),  # an attempt is at the exchange right now
        (CLAIMED.attempt_failed("read timeout", T0), T0),  # it timed out: the exchange may have it
        # The claim was written, then the worker died (or our write of the
        # exchange's answer was lost) and the feed is late: long after the lease.
        (CLAIMED, LATER),
        (CLAIMED.failed("exchange unavailable after 3 attempts", T0).reopened(T0), LATER),  # an operator's redrive
        (an_order(OrderStatus.PLACED, exchange_order_id="X1"), T0),
        (an_order(OrderStatus.PARTIALLY_FILLED, filled_quantity=4), T0),
    ],
    ids=["in-flight", "after-a-timeout", "claimed-then-silence", "reopened", "placed", "partially-filled"],
)
def test_an_order_ever_sent_to_the_exchange_becomes_pending_cancel(order: Order, at: datetime) -> None:
    assert order.cancel_requested(at).status is OrderStatus.PENDING_CANCEL


def test_a_claim_marks_the_order_sent_for_good() -> None:
    retried = CLAIMED.attempt_failed("timeout", T0).claimed_for_placement(T0 + timedelta(seconds=2), T0 + LEASE)
    assert retried.placement_quiet_at == T0 + LEASE  # only ever moves later
    assert not retried.placement_may_still_land(T0 + LEASE)
    assert retried.placement_may_still_land(T0 + LEASE - timedelta(microseconds=1))


def test_asking_again_changes_nothing() -> None:
    pending_cancel = an_order(OrderStatus.PENDING_CANCEL)
    assert pending_cancel.cancel_requested(T0 + SWEEP) is pending_cancel


@pytest.mark.parametrize(
    "status",
    [OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED, OrderStatus.FAILED],
)
def test_a_done_order_cannot_be_canceled(status: OrderStatus) -> None:
    with pytest.raises(OrderNotCancelable, match=f"is {status}"):
        an_order(status).cancel_requested(T0)


def test_a_claim_excludes_a_second_claim_until_the_lease_ends() -> None:
    claimed = an_order().claimed_for_placement(T0, T0 + LEASE)
    with pytest.raises(InvalidTransition):
        claimed.claimed_for_placement(T0 + LEASE - timedelta(seconds=1), T0 + 2 * LEASE)
    assert claimed.claimed_for_placement(T0 + LEASE, T0 + 2 * LEASE).placing_until == T0 + 2 * LEASE
    with pytest.raises(InvalidTransition):
        an_order(OrderStatus.CANCELED).claimed_for_placement(T0, T0 + LEASE)


def test_a_placement_that_lands_after_the_cancel_request_is_recorded_and_stays_pending_cancel() -> None:
    order = CLAIMED.cancel_requested(T0).placed("X9", T0)
    assert (order.status, order.exchange_order_id, order.placed_at, order.placing_until) == (
        OrderStatus.PENDING_CANCEL,
        "X9",
        T0,
        None,
    )


def test_only_an_order_the_exchange_cannot_get_any_more_is_canceled_on_our_side() -> None:
    pending_cancel = CLAIMED.cancel_requested(T0)
    with pytest.raises(InvalidTransition):  # what we sent may still land
        pending_cancel.canceled_unplaced(T0 + LEASE - timedelta(seconds=1))
    with pytest.raises(InvalidTransition):  # the exchange accepted it: not ours to settle
        pending_cancel.placed("X1", T0).canceled_unplaced(LATER)
    with pytest.raises(InvalidTransition):
        an_order(OrderStatus.PLACED).canceled_unplaced(LATER)
    assert pending_cancel.canceled_unplaced(T0 + LEASE).status is OrderStatus.CANCELED


def test_the_idempotency_key_is_scoped_per_account() -> None:
    assert order_id_for_client_key(ALICE, "k-1") != order_id_for_client_key(BOB, "k-1")
    assert Order.create(ALICE, terms("k-1"), T0).id == order_id_for_client_key(ALICE, "k-1")


# --- The service ----------------------------------------------------------------------


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository()


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue()


def create(repo: FakeRepository, queue: FakeQueue, account: str = ALICE, key: str | None = None) -> Order:
    result = orders.create_order(account, terms(key), repo, queue, SWEEP, Clock(), correlation_id=str(uuid.uuid4()))
    return result.order


def place(
    repo: FakeRepository, order_id: str, exchange: FakeExchange, receive_count: int = 1, clock: Clock | None = None
):
    return orders.place_order(
        order_id, receive_count, repo, exchange, POLICY, SWEEP, LEASE, clock or Clock(), random.Random(0)
    )


def cancel(
    repo: FakeRepository, queue: FakeQueue, order_id: str, account: str = ALICE, clock: Clock | None = None
) -> Order:
    return orders.cancel_order(order_id, account, repo, queue, SWEEP, clock or Clock())


def ask_exchange(
    repo: FakeRepository, order_id: str, exchange: FakeExchange, receive_count: int = 1, clock: Clock | None = None
):
    return orders.request_exchange_cancel(
        order_id, receive_count, repo, exchange, POLICY, SWEEP, clock or Clock(), random.Random(0)
    )


def test_another_accounts_order_is_not_found_for_read_or_cancel(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue)
    assert orders.get_order(order.id, ALICE, repo).id == order.id
    with pytest.raises(OrderNotFound):
        orders.get_order(order.id, BOB, repo)
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
    assert queue.cancels == [order.id, order.id]  # one more message: harmless, and no wait for the sweep
    assert ask_exchange(repo, order.id, exchange).outcome is CancelRequestOutcome.SENT
    assert ask_exchange(repo, order.id, exchange).outcome is CancelRequestOutcome.TOO_LATE  # a redelivery
    assert repo.orders[order.id].status is OrderStatus.PENDING_CANCEL  # the feed settles it
    # Should the feed's final report never be applied, the sweep asks again, less often.
    assert repo.sweep_after[order.id] == T0 + 10 * SWEEP


def test_an_unreachable_exchange_is_asked_again_then_left_to_the_sweep(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue)
    exchange = FakeExchange(cancel_script=["unavailable"] * 3)
    place(repo, order.id, exchange)
    cancel(repo, queue, order.id)
    first = ask_exchange(repo, order.id, exchange, receive_count=1)
    assert (first.outcome, first.retry_in_s > 0) == (CancelRequestOutcome.RETRY, True)
    last = ask_exchange(repo, order.id, exchange, receive_count=3)
    assert last.outcome is CancelRequestOutcome.LEFT_TO_SWEEP
    assert repo.sweep_after[order.id] > T0 + SWEEP
    # The sweep sends a fresh cancel message once that time has passed.
    later = Clock()
    later.now = repo.sweep_after[order.id] + timedelta(seconds=1)
    queue.cancels.clear()
    assert orders.sweep_pending(repo, queue, SWEEP, 100, later) == 1
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
    assert orders.sweep_pending(repo, queue, SWEEP, 100, later) == 1
    assert queue.cancels == [order.id]


def test_the_list_is_the_accounts_own_newest_first(repo: FakeRepository, queue: FakeQueue) -> None:
    clock = Clock()
    mine = []
    for minute in range(3):
        clock.now = T0 + timedelta(minutes=minute)
        mine.append(orders.create_order(ALICE, terms(), repo, queue, SWEEP, clock).order)
    orders.create_order(BOB, terms(), repo, queue, SWEEP, clock)
    page = orders.list_orders(OrderQuery(account_id=ALICE, limit=2), repo)
    assert [o.id for o in page.orders] == [mine[2].id, mine[1].id]
    rest = orders.list_orders(OrderQuery(account_id=ALICE, limit=2, cursor=page.next), repo)
    assert [o.id for o in rest.orders] == [mine[0].id]
    assert rest.next is None
