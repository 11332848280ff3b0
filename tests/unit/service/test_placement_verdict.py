"""Attempts used up: the order is failed only on the exchange's word, placed if the exchange holds it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.domain.model import Order, OrderStatus, VenueOrderState
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


class SlowFirstWrite(FakeRepository):
    """Storage that takes `delay` over the first write it is asked for (a brownout), moving the test's clock."""

    def __init__(self, clock: Clock, delay: timedelta) -> None:
        super().__init__()
        self.clock, self.delay, self.slow = clock, delay, False

    def update(self, order: Order, sweep_after: datetime | None) -> Order:
        if self.slow:
            self.slow = False
            self.clock.now += self.delay
        return super().update(order, sweep_after)


def test_an_attempt_whose_claim_outlasted_its_lease_does_not_send(queue: FakeQueue) -> None:
    clock = Clock()
    repo = SlowFirstWrite(clock, LEASE - timedelta(seconds=1))  # less left than one exchange call takes
    order = create(repo, queue, terms(), clock=clock).order
    exchange = FakeExchange()
    repo.slow = True
    result = place(repo, order.id, exchange, clock=clock)
    assert result.outcome is PlacementOutcome.RETRY
    assert result.retry_in_s >= 1
    assert exchange.calls == []  # a cancel or a verdict may trust "unknown" once the lease is over


class ExhaustedByAnotherDelivery(FakeRepository):
    """The first claim write loses a race against a delivery that used the last attempt meanwhile."""

    def __init__(self, exhausted: Callable[[Order], Order]) -> None:
        super().__init__()
        self.exhausted, self.race = exhausted, False

    def update(self, order: Order, sweep_after: datetime | None) -> Order:
        if self.race:
            self.race = False
            current = self.orders[order.id]
            super().update(self.exhausted(current), sweep_after)  # the other delivery's write
        return super().update(order, sweep_after)


def test_a_claim_re_read_after_the_last_attempt_was_used_asks_instead_of_sending(queue: FakeQueue) -> None:
    clock = Clock()

    def last_attempt_unanswered(order: Order) -> Order:
        claimed = order.claimed_for_placement(T0, T0)  # its lease is already over: quiet
        return claimed.attempt_failed("HTTP 503", T0, attempt=3)

    repo = ExhaustedByAnotherDelivery(last_attempt_unanswered)
    order = create(repo, queue, terms(), clock=clock).order
    exchange = FakeExchange()
    repo.race = True
    result = place(repo, order.id, exchange, receive_count=2, clock=clock)
    assert exchange.calls == []
    assert result.outcome is PlacementOutcome.FAILED  # asked: the exchange does not know it
    assert exchange.status_calls == [order.id]


def test_an_exhausted_order_never_claimed_is_asked_about_at_once(repo: FakeRepository, queue: FakeQueue) -> None:
    # Written before placement_quiet_at existed: nothing says anything may still land.
    order = create(repo, queue, terms()).order
    stored = repo.update(dataclasses.replace(repo.orders[order.id], attempts=3), sweep_after=T0 + SWEEP)
    assert stored.placement_quiet_at is None
    exchange = FakeExchange()
    assert place(repo, order.id, exchange).outcome is PlacementOutcome.FAILED
    assert exchange.status_calls == [order.id]


def test_a_rejection_after_an_unanswered_attempt_asks_whether_that_attempt_landed(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    # A venue that checks terms before duplicate ids rejects the copy of a live order.
    order = create(repo, queue, terms()).order
    exchange = FakeExchange(["lost", "reject"])
    assert place(repo, order.id, exchange).outcome is PlacementOutcome.RETRY
    assert place(repo, order.id, exchange, receive_count=2).outcome is PlacementOutcome.PLACED
    assert repo.orders[order.id].status is OrderStatus.PLACED
    assert exchange.status_calls == [order.id]


def test_a_rejection_after_an_unanswered_attempt_the_exchange_never_got_is_final(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    order = create(repo, queue, terms()).order
    exchange = FakeExchange(["unavailable", "reject"])
    place(repo, order.id, exchange)
    assert place(repo, order.id, exchange, receive_count=2).outcome is PlacementOutcome.REJECTED
    assert "unknown instrument" in (repo.orders[order.id].failure_reason or "")


def test_an_acceptance_for_an_order_marked_failed_meanwhile_corrects_it(repo: FakeRepository, queue: FakeQueue) -> None:
    order = create(repo, queue, terms()).order
    exchange = FakeExchange()

    def operator_marks_it_failed() -> None:
        current = repo.orders[order.id]
        repo.update(dataclasses.replace(current, status=OrderStatus.FAILED, failure_reason="by hand"), None)

    exchange.during_place.append(operator_marks_it_failed)
    result = place(repo, order.id, exchange)
    assert (result.outcome, result.corrected) == (PlacementOutcome.PLACED, True)
    corrected = repo.orders[order.id]
    assert (corrected.status, corrected.exchange_order_id, corrected.failure_reason) == (OrderStatus.PLACED, "X1", None)


def test_an_implausible_status_answer_is_not_taken_the_order_is_asked_about_again(
    repo: FakeRepository, queue: FakeQueue
) -> None:
    clock = Clock()
    exchange = FakeExchange(["lost", "lost", "lost"])
    order_id = exhaust(repo, queue, exchange, clock)
    quantity = repo.orders[order_id].terms.quantity
    # More filled than ordered: no venue can hold this of our order.
    exchange.states[order_id] = VenueOrderState("X1", OrderStatus.FILLED, quantity + 1, 0, Decimal("1.00"))
    clock.now += LEASE
    result = place(repo, order_id, exchange, clock=clock)
    assert result.outcome is PlacementOutcome.AWAITING_VERDICT
    order = repo.orders[order_id]
    assert (order.status, order.filled_quantity, order.exchange_order_id) == (OrderStatus.PENDING, 0, None)
    assert "implausible order status answer" in (order.last_error or "")
