"""What an accepted order gets, per time in force and type: the plan of its reports, drawn from a seeded stream."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal

import pytest

from devstack.exchange_sim.config import SimConfig
from devstack.exchange_sim.fill_plans import Step, plan_execution, plan_triggered, reference_price
from devstack.exchange_sim.orders import OrderRequest
from devstack.exchange_sim.time_in_force import Lifetime

pytestmark = pytest.mark.unit

ISIN = "US0378331005"
LIMIT = OrderRequest("cl-1", ISIN, "buy", "limit", 100, 500.0)
MARKET = replace(LIMIT, type="market", limit_price=None)
CALM = SimConfig(reject_rate=0.0, cancel_rate=0.0, exec_delay_s=0.2, max_partial_fills=3)
SEEDS = range(40)
# A session far away: nothing here expires on its own unless a test says so.
DAY = Lifetime(expires_in_s=3600.0)


def plan(order: OrderRequest, config: SimConfig = CALM, seed: int = 1, lifetime: Lifetime = DAY) -> list[Step]:
    return plan_execution(order, config, random.Random(seed), lifetime)


def types(steps: list[Step]) -> list[str]:
    return [step.exec_type for step in steps]


def filled(steps: list[Step]) -> int:
    return sum(step.last_qty for step in steps)


def forced(outcome: str) -> SimConfig:
    return replace(CALM, limit_outcome=outcome)


# --- ioc ---


def test_ioc_limit_that_finds_nothing_is_canceled_without_a_fill() -> None:
    steps = plan(replace(LIMIT, time_in_force="ioc"), forced("rest"))

    assert types(steps) == ["new", "canceled"]


def test_ioc_limit_fills_what_it_can_and_the_rest_is_canceled() -> None:
    for seed in SEEDS:
        steps = plan(replace(LIMIT, time_in_force="ioc"), forced("partial"), seed)

        assert types(steps)[0] == "new"
        assert types(steps)[-1] == "canceled"
        assert set(types(steps)[1:-1]) == {"partial_fill"}
        assert 0 < filled(steps) < LIMIT.quantity


def test_ioc_never_rests_and_never_expires() -> None:
    for seed in SEEDS:
        steps = plan(replace(LIMIT, time_in_force="ioc"), CALM, seed, Lifetime(0.0, 0.0))

        assert types(steps)[-1] in {"fill", "canceled"}
        assert "expired" not in types(steps)


def test_ioc_market_fills_completely() -> None:
    for seed in SEEDS:
        steps = plan(replace(MARKET, time_in_force="ioc"), forced("rest"), seed)

        assert types(steps)[-1] == "fill"
        assert filled(steps) == MARKET.quantity


def test_ioc_outcomes_are_drawn_when_not_forced() -> None:
    endings = {
        (types(steps)[-1], filled(steps) > 0)
        for steps in (plan(replace(LIMIT, time_in_force="ioc"), CALM, seed) for seed in SEEDS)
    }

    assert endings == {("fill", True), ("canceled", True), ("canceled", False)}


# --- fok ---


def test_fok_that_can_fill_fills_completely_in_one_execution() -> None:
    steps = plan(replace(LIMIT, time_in_force="fok"), forced("fill"))

    assert types(steps) == ["new", "fill"]
    assert steps[1].last_qty == LIMIT.quantity


@pytest.mark.parametrize("outcome", ["rest", "partial"])
def test_fok_that_cannot_fill_completely_is_canceled_without_any_fill(outcome: str) -> None:
    for seed in SEEDS:
        steps = plan(replace(LIMIT, time_in_force="fok"), forced(outcome), seed)

        assert types(steps) == ["new", "canceled"]


def test_a_venue_cancel_of_a_fok_order_fills_nothing() -> None:
    steps = plan(replace(MARKET, time_in_force="fok"), replace(CALM, cancel_rate=1.0))

    assert types(steps) == ["new", "canceled"]


def test_fok_market_fills_completely_in_one_execution() -> None:
    assert types(plan(replace(MARKET, time_in_force="fok"), forced("rest"))) == ["new", "fill"]


def test_a_fok_order_may_still_be_rejected() -> None:
    assert types(plan(replace(LIMIT, time_in_force="fok"), replace(CALM, reject_rate=1.0))) == ["rejected"]


# --- day, gtc, gtd ---


def test_a_resting_day_order_expires_at_its_session_close() -> None:
    steps = plan(LIMIT, forced("rest"), lifetime=Lifetime(expires_in_s=42.0))

    assert types(steps) == ["new", "expired"]
    assert sum(step.delay_s for step in steps) == pytest.approx(42.0)


def test_a_partly_filled_day_order_expires_at_its_session_close_after_its_fills() -> None:
    for seed in SEEDS:
        steps = plan(LIMIT, forced("partial"), seed, Lifetime(expires_in_s=42.0))

        assert types(steps)[-1] == "expired"
        assert 0 < filled(steps) < LIMIT.quantity
        assert sum(step.delay_s for step in steps) == pytest.approx(42.0)


def test_limit_ttl_ends_a_day_limit_order_before_its_session_close() -> None:
    steps = plan(LIMIT, forced("rest"), lifetime=Lifetime(expires_in_s=3600.0, ttl_s=1.0))

    # The TTL runs from `new`.
    assert types(steps) == ["new", "expired"]
    assert steps[1].delay_s == pytest.approx(1.0)


def test_a_gtc_order_rests_with_no_end_planned() -> None:
    gtc = replace(LIMIT, time_in_force="gtc")

    assert types(plan(gtc, forced("rest"), lifetime=Lifetime())) == ["new"]
    for seed in SEEDS:
        steps = plan(gtc, forced("partial"), seed, Lifetime())
        assert set(types(steps)[1:]) == {"partial_fill"}


def test_a_gtd_order_expires_at_its_time() -> None:
    steps = plan(replace(LIMIT, time_in_force="gtd"), forced("rest"), lifetime=Lifetime(expires_in_s=7.5))

    assert types(steps) == ["new", "expired"]
    assert sum(step.delay_s for step in steps) == pytest.approx(7.5)


def test_a_gtd_time_already_past_expires_right_after_new() -> None:
    steps = plan(replace(LIMIT, time_in_force="gtd"), forced("rest"), lifetime=Lifetime(expires_in_s=-60.0))

    assert types(steps) == ["new", "expired"]
    assert 0 < steps[1].delay_s <= 1.5 * CALM.exec_delay_s


@pytest.mark.parametrize("time_in_force", ["day", "gtc", "gtd"])
def test_filled_orders_never_expire(time_in_force: str) -> None:
    steps = plan(replace(LIMIT, time_in_force=time_in_force), forced("fill"), lifetime=Lifetime(1.0, 1.0))

    assert types(steps)[-1] == "fill"
    assert filled(steps) == LIMIT.quantity


def test_forcing_the_limit_outcome_draws_what_a_random_one_does() -> None:
    # The outcome is drawn either way, so forcing it shifts no other draw: where the draw
    # gave the forced outcome anyway, the plans are the same to the last delay.
    outcomes = set()
    for seed in SEEDS:
        drawn = plan(LIMIT, CALM, seed)
        outcome = "rest" if types(drawn) == ["new", "expired"] else "fill" if types(drawn)[-1] == "fill" else "partial"
        outcomes.add(outcome)
        assert plan(LIMIT, forced(outcome), seed) == drawn
    assert outcomes == {"rest", "partial", "fill"}


# --- stop orders ---


@pytest.mark.parametrize("order_type", ["stop", "stop_limit"])
def test_an_untriggered_stop_is_acknowledged_and_rests(order_type: str) -> None:
    stop = replace(LIMIT, type=order_type, stop_price=200.0, time_in_force="gtc")

    for seed in SEEDS:
        assert types(plan(stop, CALM, seed, Lifetime())) == ["new"]


def test_an_untriggered_day_stop_expires_at_the_session_close_not_by_the_ttl() -> None:
    stop = replace(MARKET, type="stop", stop_price=200.0)

    steps = plan(stop, CALM, lifetime=Lifetime(expires_in_s=30.0, ttl_s=None))

    assert types(steps) == ["new", "expired"]
    assert sum(step.delay_s for step in steps) == pytest.approx(30.0)


def test_a_stop_may_be_rejected_at_entry() -> None:
    stop = replace(MARKET, type="stop", stop_price=200.0)

    assert types(plan(stop, replace(CALM, reject_rate=1.0))) == ["rejected"]


def test_a_triggered_stop_fills_as_a_market_order_around_its_trigger_price() -> None:
    trigger = Decimal("1234.56")
    for seed in SEEDS:
        steps = plan_triggered(MARKET, CALM, random.Random(seed), Lifetime(), trigger)

        assert "new" not in types(steps)
        assert types(steps)[-1] == "fill"
        assert filled(steps) == MARKET.quantity
        for step in steps:
            assert step.last_price is not None
            assert abs(step.last_price - trigger) <= trigger * Decimal("0.005")


def test_a_triggered_stop_limit_never_fills_beyond_its_limit() -> None:
    # The price ran past the limit: it fills at the limit or better, or rests.
    trigger = Decimal("220.00")
    limit = replace(LIMIT, limit_price=210.0)
    for seed in SEEDS:
        steps = plan_triggered(limit, CALM, random.Random(seed), Lifetime(), trigger)
        assert all(step.last_price <= Decimal("210.00") for step in steps if step.last_price is not None)


def test_a_triggered_stop_limit_that_rests_expires_with_its_day() -> None:
    steps = plan_triggered(LIMIT, forced("rest"), random.Random(1), Lifetime(expires_in_s=12.0), Decimal("100.00"))

    assert types(steps) == ["expired"]
    assert steps[0].delay_s == pytest.approx(12.0)


def test_a_triggered_stop_is_never_rejected() -> None:
    steps = plan_triggered(MARKET, replace(CALM, reject_rate=1.0), random.Random(1), Lifetime(), Decimal("100.00"))

    assert types(steps)[-1] == "fill"


def test_plain_orders_still_fill_around_the_reference_price() -> None:
    reference = reference_price(ISIN)
    for seed in SEEDS:
        for step in plan(MARKET, CALM, seed):
            if step.last_price is not None:
                assert abs(step.last_price - reference) <= reference * Decimal("0.005")
