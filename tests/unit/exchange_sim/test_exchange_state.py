"""The exchange with time in force and stops, in process: its engine run step by step by a scheduler the test drives."""

from __future__ import annotations

import datetime
import heapq
import itertools
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from devstack.exchange_sim.config import SimConfig
from devstack.exchange_sim.fill_plans import reference_price
from devstack.exchange_sim.orders import OrderRequest, Outcome, StatusOutcome, parse_order, utc_text
from devstack.exchange_sim.state import ExchangeState

pytestmark = pytest.mark.unit

ISIN = "US0378331005"
REFERENCE = reference_price(ISIN)
CONFIG = SimConfig(
    failure_rate=0.0,
    latency_s=0.0,
    exec_delay_s=0.01,
    reject_rate=0.0,
    cancel_rate=0.0,
    price_tick_s=0.01,
    price_step_bps=0,
)


class ManualScheduler:
    """Runs due jobs only when told to, on a clock of its own: the engine without a thread, and no test waits."""

    def __init__(self) -> None:
        self._jobs: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._clock = 0.0

    def now(self) -> float:
        return self._clock

    def start(self) -> None:
        pass

    def call_at(self, when: float, job: Callable[[], None]) -> None:
        heapq.heappush(self._jobs, (when, next(self._order), job))

    def clear(self) -> None:
        self._jobs.clear()

    def stop(self) -> None:
        self._jobs.clear()

    def run_for(self, seconds: float) -> None:
        """Let `seconds` pass: every job due by then runs at its time, in due order, the ones they schedule included."""
        horizon = self._clock + seconds
        while self._jobs and self._jobs[0][0] <= horizon:
            self._clock, _, job = heapq.heappop(self._jobs)
            job()
        self._clock = horizon


@pytest.fixture
def scheduler() -> ManualScheduler:
    return ManualScheduler()


def exchange(scheduler: ManualScheduler, **knobs: Any) -> ExchangeState:
    state = ExchangeState(CONFIG.updated(knobs) if knobs else CONFIG, seed=11, scheduler=scheduler)
    state.start()
    return state


def submit(state: ExchangeState, **fields: Any) -> str:
    order = {
        "client_order_id": f"cl-{next(IDS)}",
        "instrument": ISIN,
        "side": "buy",
        "type": "market",
        "quantity": 50,
        "limit_price": None,
        **fields,
    }
    request = parse_order(json.dumps(order).encode())
    assert isinstance(request, OrderRequest), request
    assert state.submit(request).outcome is Outcome.ACCEPTED
    return request.client_order_id


IDS = itertools.count(1)


def reports(state: ExchangeState, client_order_id: str) -> list[dict[str, Any]]:
    return [entry.report for entry in state.feed_log.since(1) if entry.report["client_order_id"] == client_order_id]


def exec_types(state: ExchangeState, client_order_id: str) -> list[str]:
    return [report["exec_type"] for report in reports(state, client_order_id)]


def status(state: ExchangeState, client_order_id: str) -> dict[str, Any]:
    decision = state.status(client_order_id)
    assert decision.outcome is StatusOutcome.KNOWN
    assert decision.answer is not None
    return dict(decision.answer)


def view(state: ExchangeState, client_order_id: str) -> dict[str, Any]:
    seen = state.order_view(client_order_id)
    assert seen is not None
    return seen


# --- stops ---


def test_a_buy_stop_rests_untriggered_until_the_price_reaches_it_from_below(scheduler: ManualScheduler) -> None:
    state = exchange(scheduler)
    stop_price = REFERENCE + 5
    order_id = submit(state, type="stop", stop_price=float(stop_price), time_in_force="gtc")
    scheduler.run_for(1.0)

    assert exec_types(state, order_id) == ["new"]
    assert status(state, order_id)["status"] == "new"
    assert view(state, order_id)["trigger_price"] is None
    assert state.set_price(ISIN, stop_price - Decimal("0.01"))["triggered"] == []
    scheduler.run_for(1.0)
    assert exec_types(state, order_id) == ["new"]

    answer = state.set_price(ISIN, stop_price)
    scheduler.run_for(1.0)

    assert answer == {
        "instrument": ISIN,
        "price": str(stop_price),
        "reference_price": str(REFERENCE),
        "triggered": [order_id],
    }
    assert exec_types(state, order_id)[-1] == "fill"
    assert view(state, order_id)["trigger_price"] == str(stop_price)
    assert status(state, order_id)["status"] == "filled"
    for report in reports(state, order_id)[1:]:
        # Worked as a market order from the price that triggered it.
        assert abs(Decimal(report["last_price"]) - stop_price) <= stop_price * Decimal("0.005")


def test_a_sell_stop_limit_triggers_from_above_and_fills_within_its_limit(scheduler: ManualScheduler) -> None:
    state = exchange(scheduler, limit_outcome="fill")
    stop_price = REFERENCE - 5
    order_id = submit(
        state, type="stop_limit", side="sell", stop_price=float(stop_price), limit_price=float(stop_price - 1)
    )
    scheduler.run_for(1.0)
    assert state.set_price(ISIN, stop_price + 1)["triggered"] == []

    assert state.set_price(ISIN, stop_price - Decimal("0.50"))["triggered"] == [order_id]
    scheduler.run_for(1.0)

    assert exec_types(state, order_id)[-1] == "fill"
    assert all(Decimal(report["last_price"]) >= stop_price - 1 for report in reports(state, order_id)[1:])


def test_a_stop_already_reached_when_acknowledged_triggers_after_its_new(scheduler: ManualScheduler) -> None:
    state = exchange(scheduler)
    # Set before the order's `new`: it is watched from its acknowledgement on, and triggers then.
    order_id = submit(state, type="stop", stop_price=float(REFERENCE - 1))
    assert state.set_price(ISIN, REFERENCE)["triggered"] == []

    scheduler.run_for(1.0)

    types = exec_types(state, order_id)
    assert types[0] == "new"
    assert types[-1] == "fill"
    assert view(state, order_id)["trigger_price"] == str(REFERENCE)


def test_the_walking_price_triggers_a_stop(scheduler: ManualScheduler) -> None:
    state = exchange(scheduler, price_step_bps=200)
    order_id = submit(state, type="stop", stop_price=float(REFERENCE * Decimal("1.02")), time_in_force="gtc")

    scheduler.run_for(30.0)

    assert view(state, order_id)["trigger_price"] is not None
    assert Decimal(view(state, order_id)["trigger_price"]) >= REFERENCE * Decimal("1.02")
    assert exec_types(state, order_id)[-1] == "fill"
    assert Decimal(state.price(ISIN)["price"]) != REFERENCE


def test_a_canceled_stop_never_triggers(scheduler: ManualScheduler) -> None:
    state = exchange(scheduler)
    order_id = submit(state, type="stop", stop_price=float(REFERENCE + 1))
    scheduler.run_for(1.0)

    assert state.cancel(order_id).outcome.value == "canceled"
    assert state.set_price(ISIN, REFERENCE + 2)["triggered"] == []
    scheduler.run_for(1.0)

    assert exec_types(state, order_id) == ["new", "canceled"]
    assert status(state, order_id)["status"] == "canceled"


def test_an_untriggered_day_stop_expires_at_the_session_close(scheduler: ManualScheduler) -> None:
    state = exchange(scheduler, session_length_s=2.0)
    order_id = submit(state, type="stop", stop_price=float(REFERENCE + 1))

    scheduler.run_for(2.5)

    assert exec_types(state, order_id) == ["new", "expired"]
    assert status(state, order_id)["status"] == "expired"
    assert state.set_price(ISIN, REFERENCE + 2)["triggered"] == []


def test_reset_starts_the_price_paths_again(scheduler: ManualScheduler) -> None:
    state = exchange(scheduler)
    state.set_price(ISIN, Decimal("1.23"))

    state.reset()

    assert state.price(ISIN)["price"] == str(REFERENCE)


# --- time in force ---


def test_ioc_fills_what_it_can_then_the_rest_is_canceled(scheduler: ManualScheduler) -> None:
    state = exchange(scheduler, limit_outcome="partial")
    order_id = submit(state, type="limit", limit_price=float(REFERENCE), time_in_force="ioc")

    scheduler.run_for(1.0)

    types = exec_types(state, order_id)
    assert types[0] == "new" and types[-1] == "canceled"
    assert "partial_fill" in types
    answer = status(state, order_id)
    assert answer["status"] == "canceled"
    assert 0 < answer["cum_qty"] < 50
    assert answer["leaves_qty"] == 0


@pytest.mark.parametrize(
    ("outcome", "types", "cum_qty"), [("fill", ["new", "fill"], 50), ("rest", ["new", "canceled"], 0)]
)
def test_fok_fills_completely_or_is_canceled_with_nothing(
    scheduler: ManualScheduler, outcome: str, types: list[str], cum_qty: int
) -> None:
    state = exchange(scheduler, limit_outcome=outcome)
    order_id = submit(state, type="limit", limit_price=float(REFERENCE), time_in_force="fok")

    scheduler.run_for(1.0)

    assert exec_types(state, order_id) == types
    assert status(state, order_id)["cum_qty"] == cum_qty


def test_a_resting_day_order_expires_at_the_session_close(scheduler: ManualScheduler) -> None:
    # The session closes an hour from now (to the second); a tick every ten minutes is enough here.
    close = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).strftime("%H:%M:%S")
    state = exchange(scheduler, limit_outcome="rest", session_close_utc=close, price_tick_s=600.0)
    order_id = submit(state, type="limit", limit_price=float(REFERENCE))

    scheduler.run_for(3500.0)
    assert exec_types(state, order_id) == ["new"]
    scheduler.run_for(200.0)

    assert exec_types(state, order_id) == ["new", "expired"]
    assert status(state, order_id)["status"] == "expired"


def test_limit_ttl_ends_a_day_limit_order_before_its_session_close(scheduler: ManualScheduler) -> None:
    state = exchange(scheduler, limit_outcome="rest", limit_ttl_s=1.0)
    order_id = submit(state, type="limit", limit_price=float(REFERENCE))

    scheduler.run_for(1.5)

    assert exec_types(state, order_id) == ["new", "expired"]


def test_a_gtd_order_expires_at_its_time_and_a_gtc_one_rests(scheduler: ManualScheduler) -> None:
    state = exchange(scheduler, limit_outcome="rest", session_length_s=1.0, limit_ttl_s=0.1)
    expires_at = utc_text(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=3))
    gtd = submit(state, type="limit", limit_price=float(REFERENCE), time_in_force="gtd", expires_at=expires_at)
    gtc = submit(state, type="limit", limit_price=float(REFERENCE), time_in_force="gtc")

    scheduler.run_for(2.0)
    assert exec_types(state, gtd) == ["new"]
    scheduler.run_for(5.0)

    assert exec_types(state, gtd) == ["new", "expired"]
    assert exec_types(state, gtc) == ["new"]
    assert status(state, gtc)["status"] == "new"
    assert view(state, gtd)["order"]["expires_at"] == expires_at
