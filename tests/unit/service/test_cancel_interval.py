"""Repeated cancels are not amplified: one cancel request per order per resend interval, queued and sent (issue 15)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest

from chalicelib.adapters.repository import ConcurrentModification
from chalicelib.domain.model import Order, OrderStatus
from chalicelib.service import client_orders
from chalicelib.service.exchange_cancel import CancelRequestOutcome, request_exchange_cancel
from chalicelib.service.recovery import sweep_pending
from tests.unit import helpers
from tests.unit.fakes import SWEEP, TIMINGS, FakeExchange, FakeQueue, FakeRepository, Fakes
from tests.unit.helpers import T0, Clock, ask_exchange, place
from tests.unit.helpers import limit_terms as terms

pytestmark = pytest.mark.unit

ACCOUNT = "alice"
INTERVAL = TIMINGS.cancel_resend_interval
# Two requests "at once" still read the clock apart: a stored stamp equal to a
# request's own reading is how it knows its write committed though the answer was lost.
TICK = timedelta(microseconds=1)


def placed_order(repo: FakeRepository, queue: FakeQueue, exchange: FakeExchange) -> Order:
    order = helpers.create(repo, queue, terms(), account=ACCOUNT).order
    place(repo, order.id, exchange)
    return order


def delete(repo: FakeRepository, queue: FakeQueue, order_id: str, at: datetime) -> Order:
    return helpers.cancel(repo, queue, order_id, ACCOUNT, Clock(at))


class StaleReads:
    """The orders repository as a delivery that read the order before another one wrote it sees it."""

    def __init__(self, repo: FakeRepository, stale: Order) -> None:
        self.repo = repo
        self.stale: Order | None = stale

    def get(self, order_id: str) -> Order | None:
        # The first read only: a re-read after a lost write race sees what is stored.
        stale, self.stale = self.stale, None
        return stale if stale is not None and order_id == stale.id else self.repo.get(order_id)

    def __getattr__(self, name: str) -> object:
        return getattr(self.repo, name)


def test_a_loop_of_deletes_queues_one_cancel_request_per_interval(repo: FakeRepository, queue: FakeQueue) -> None:
    order = placed_order(repo, queue, FakeExchange())
    for step in range(20):  # 20 DELETEs in the first interval
        answered = delete(repo, queue, order.id, T0 + step * INTERVAL / 20)
        assert answered.status is OrderStatus.PENDING_CANCEL  # each one answers 202
    assert queue.cancels == [order.id]
    assert delete(repo, queue, order.id, T0 + INTERVAL).status is OrderStatus.PENDING_CANCEL
    assert queue.cancels == [order.id, order.id]  # the interval is over: one more
    delete(repo, queue, order.id, T0 + INTERVAL + timedelta(seconds=1))
    assert queue.cancels == [order.id, order.id]


def test_two_deletes_at_once_after_the_interval_queue_one_request(repo: FakeRepository, queue: FakeQueue) -> None:
    order = placed_order(repo, queue, FakeExchange())
    delete(repo, queue, order.id, T0)
    stale = repo.orders[order.id]  # what the second request read
    delete(repo, queue, order.id, T0 + INTERVAL)  # the first one writes cancel_queued_at, then queues
    racing_clock = Clock(T0 + INTERVAL + TICK)
    racing = Fakes(orders=StaleReads(repo, stale), queue=queue, clock=racing_clock).dependencies()  # type: ignore[arg-type]
    assert client_orders.cancel_order(order.id, ACCOUNT, racing).status is OrderStatus.PENDING_CANCEL
    assert queue.cancels == [order.id, order.id]  # its versioned write lost: it re-read and did not queue


def test_the_worker_calls_the_exchange_once_per_interval(repo: FakeRepository, queue: FakeQueue) -> None:
    exchange = FakeExchange()
    order = placed_order(repo, queue, exchange)
    delete(repo, queue, order.id, T0)
    assert ask_exchange(repo, order.id, exchange, clock=Clock(T0)).outcome is CancelRequestOutcome.SENT
    for step in range(1, 5):  # redeliveries, the sweep's message, a client's repeat: all within the interval
        result = ask_exchange(repo, order.id, exchange, clock=Clock(T0 + step * INTERVAL / 5))
        assert result.outcome is CancelRequestOutcome.SENT_RECENTLY
    assert exchange.cancel_calls == [order.id]
    assert ask_exchange(repo, order.id, exchange, clock=Clock(T0 + INTERVAL)).outcome is CancelRequestOutcome.TOO_LATE
    assert exchange.cancel_calls == [order.id, order.id]
    assert repo.orders[order.id].cancel_sent_at == T0 + INTERVAL


def test_two_deliveries_at_once_send_one_cancel(repo: FakeRepository, queue: FakeQueue) -> None:
    exchange = FakeExchange()
    order = placed_order(repo, queue, exchange)
    delete(repo, queue, order.id, T0)
    stale = repo.orders[order.id]  # both deliveries read this copy
    assert ask_exchange(repo, order.id, exchange, clock=Clock(T0)).outcome is CancelRequestOutcome.SENT
    racing = Fakes(orders=StaleReads(repo, stale), exchange=exchange, clock=Clock(T0 + TICK)).dependencies()  # type: ignore[arg-type]
    assert request_exchange_cancel(order.id, 1, racing).outcome is CancelRequestOutcome.SENT_RECENTLY
    assert exchange.cancel_calls == [order.id]


def test_the_send_is_recorded_before_the_exchange_is_called(repo: FakeRepository, queue: FakeQueue) -> None:
    # A worker that dies during the call leaves the record: no other sends within the interval, and the
    # sweep time moved past it, so the sweep sends again if nothing settles the order.
    exchange = FakeExchange(cancel_script=["unavailable"])
    order = placed_order(repo, queue, exchange)
    delete(repo, queue, order.id, T0)
    result = ask_exchange(repo, order.id, exchange, clock=Clock(T0 + timedelta(seconds=1)))
    assert result.outcome is CancelRequestOutcome.RETRY
    stored = repo.orders[order.id]
    assert stored.cancel_sent_at == T0 + timedelta(seconds=1)
    assert repo.sweep_after[order.id] == T0 + timedelta(seconds=1) + SWEEP


def test_the_sweep_resends_a_cancel_stuck_past_the_interval(repo: FakeRepository, queue: FakeQueue) -> None:
    exchange = FakeExchange()
    order = placed_order(repo, queue, exchange)
    delete(repo, queue, order.id, T0)
    assert ask_exchange(repo, order.id, exchange, clock=Clock(T0)).outcome is CancelRequestOutcome.SENT
    # The exchange's canceled report is lost: the order stays pending_cancel.
    queue.cancels.clear()
    stuck = Clock(repo.sweep_after[order.id] + timedelta(seconds=1))
    assert sweep_pending(Fakes(orders=repo, queue=queue, clock=stuck).dependencies(), limit=10) == 1
    assert queue.cancels == [order.id]
    # The sweep's message does reach the exchange: the last send is an interval and more ago.
    assert ask_exchange(repo, order.id, exchange, clock=stuck).outcome is CancelRequestOutcome.TOO_LATE
    assert exchange.cancel_calls == [order.id, order.id]


def test_an_order_settled_meanwhile_is_not_sent(repo: FakeRepository, queue: FakeQueue) -> None:
    exchange = FakeExchange()
    order = placed_order(repo, queue, exchange)
    delete(repo, queue, order.id, T0)
    stale = repo.orders[order.id]
    done = repo.orders[order.id]
    repo.update(dataclasses.replace(done, status=OrderStatus.CANCELED), sweep_after=None)
    racing = Fakes(orders=StaleReads(repo, stale), exchange=exchange, clock=Clock(T0)).dependencies()  # type: ignore[arg-type]
    assert request_exchange_cancel(order.id, 1, racing).outcome is CancelRequestOutcome.NOTHING_TO_DO
    assert exchange.cancel_calls == []


class LostWriteAnswer:
    """The orders repository when its next write commits and the answer is lost: the client's retry conflicts."""

    def __init__(self, repo: FakeRepository) -> None:
        self.repo = repo
        self.armed = True

    def update(self, order: Order, sweep_after: datetime | None) -> Order:
        stored = self.repo.update(order, sweep_after)
        if self.armed:
            self.armed = False
            raise ConcurrentModification(stored.id)  # the retry met our own committed write
        return stored

    def __getattr__(self, name: str) -> object:
        return getattr(self.repo, name)


def test_a_first_delete_whose_write_answer_was_lost_still_queues_the_cancel(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    order = placed_order(repo, queue, FakeExchange())
    lossy = Fakes(orders=LostWriteAnswer(repo), queue=queue, clock=Clock(T0)).dependencies()  # type: ignore[arg-type]
    assert client_orders.cancel_order(order.id, ACCOUNT, lossy).status is OrderStatus.PENDING_CANCEL
    assert repo.orders[order.id].cancel_queued_at == T0
    assert queue.cancels == [order.id]  # not left to the sweep while the order trades


def test_a_repeated_delete_whose_claim_answer_was_lost_still_queues_the_cancel(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    order = placed_order(repo, queue, FakeExchange())
    delete(repo, queue, order.id, T0)
    lossy = Fakes(orders=LostWriteAnswer(repo), queue=queue, clock=Clock(T0 + INTERVAL)).dependencies()  # type: ignore[arg-type]
    client_orders.cancel_order(order.id, ACCOUNT, lossy)
    assert repo.orders[order.id].cancel_queued_at == T0 + INTERVAL
    assert queue.cancels == [order.id, order.id]


def test_a_send_whose_record_answer_was_lost_still_calls_the_exchange(repo: FakeRepository, queue: FakeQueue) -> None:
    exchange = FakeExchange()
    order = placed_order(repo, queue, exchange)
    delete(repo, queue, order.id, T0)
    lossy = Fakes(orders=LostWriteAnswer(repo), exchange=exchange, clock=Clock(T0)).dependencies()  # type: ignore[arg-type]
    assert request_exchange_cancel(order.id, 1, lossy).outcome is CancelRequestOutcome.SENT
    assert exchange.cancel_calls == [order.id]
    assert repo.orders[order.id].cancel_sent_at == T0
    # The record is ours and stands: a redelivery within the interval does not send again.
    redelivery = ask_exchange(repo, order.id, exchange, clock=Clock(T0 + INTERVAL / 2))
    assert redelivery.outcome is CancelRequestOutcome.SENT_RECENTLY
    assert exchange.cancel_calls == [order.id]
