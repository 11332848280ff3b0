"""Where an order's placement stands: never sent, at the exchange now, may still land, quiet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.domain.model import Order, OrderStatus, OrderTerms, OrderType, PlacementStage, Side

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=15)
TICK = timedelta(microseconds=1)


def new_order() -> Order:
    return Order.create("acme", OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", 10, Decimal("99.5")), T0)


def test_an_order_no_attempt_claimed_was_never_sent_however_long_it_waits() -> None:
    assert new_order().placement_stage(T0 + timedelta(days=1)) is PlacementStage.NEVER_SENT


def test_a_claim_is_at_the_exchange_until_its_lease_ends_then_quiet() -> None:
    claimed = new_order().claimed_for_placement(T0, T0 + LEASE)
    assert claimed.placement_stage(T0) is PlacementStage.AT_THE_EXCHANGE
    assert claimed.placement_stage(T0 + LEASE - TICK) is PlacementStage.AT_THE_EXCHANGE
    assert claimed.placement_stage(T0 + LEASE) is PlacementStage.QUIET


def test_an_attempt_that_failed_early_may_still_land_until_its_lease_would_have_ended() -> None:
    timed_out = new_order().claimed_for_placement(T0, T0 + LEASE).attempt_failed("read timeout", T0 + TICK)
    assert timed_out.placing_until is None
    assert timed_out.placement_stage(T0 + TICK) is PlacementStage.MAY_STILL_LAND
    assert timed_out.placement_stage(T0 + LEASE) is PlacementStage.QUIET


def test_a_reopened_order_was_sent_before_and_stays_so() -> None:
    failed = new_order().claimed_for_placement(T0, T0 + LEASE).failed("exchange unavailable", T0 + LEASE)
    reopened = failed.reopened(T0 + 2 * LEASE, by="ops-test")
    assert reopened.status is OrderStatus.PENDING
    assert reopened.placement_stage(T0 + 2 * LEASE) is PlacementStage.QUIET


@pytest.mark.parametrize(
    ("stage", "status_after_cancel"),
    [
        (PlacementStage.NEVER_SENT, OrderStatus.CANCELED),
        (PlacementStage.AT_THE_EXCHANGE, OrderStatus.PENDING_CANCEL),
        (PlacementStage.MAY_STILL_LAND, OrderStatus.PENDING_CANCEL),
        (PlacementStage.QUIET, OrderStatus.PENDING_CANCEL),
    ],
)
def test_only_an_order_never_sent_is_canceled_without_the_exchange(
    stage: PlacementStage, status_after_cancel: OrderStatus
) -> None:
    claimed = new_order().claimed_for_placement(T0, T0 + LEASE)
    order, at = {
        PlacementStage.NEVER_SENT: (new_order(), T0),
        PlacementStage.AT_THE_EXCHANGE: (claimed, T0),
        PlacementStage.MAY_STILL_LAND: (claimed.attempt_failed("timeout", T0), T0),
        PlacementStage.QUIET: (claimed, T0 + LEASE),
    }[stage]
    assert order.placement_stage(at) is stage
    assert order.cancel_requested(at).status is status_after_cancel
