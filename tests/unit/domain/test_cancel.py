"""Cancels and ownership in the domain: what a cancel may settle without the exchange, and whose order it is."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.domain.model import (
    InvalidTransition,
    Order,
    OrderNotCancelable,
    OrderStatus,
    OrderTerms,
    OrderType,
    Side,
    order_id_for_client_key,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SWEEP = timedelta(seconds=60)
LEASE = timedelta(seconds=15)
ALICE, BOB = "alice", "bob"


def terms(client_order_id: str | None = None, instrument: str = "US0378331005", side: Side = Side.BUY) -> OrderTerms:
    return OrderTerms(OrderType.LIMIT, side, instrument, 10, Decimal("99.5"), client_order_id)


def an_order(status: OrderStatus = OrderStatus.PENDING, **changes: object) -> Order:
    return replace(Order.create(ALICE, terms(), T0), status=status, **changes)  # type: ignore[arg-type]


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
        # an operator's redrive
        (CLAIMED.failed("exchange unavailable after 3 attempts", T0).reopened(T0, by="ops-test"), LATER),
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
