"""The reconciler: open and recently failed orders compared with the exchange, repaired by the reports' merge."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from chalice.local import LambdaContext

from chalicelib.adapters.repository import ReconcileCursor
from chalicelib.domain.model import Order, OrderStatus, VenueOrderState
from chalicelib.entrypoints import reconcile
from chalicelib.service.reconciliation import Check, reconcile_orders
from tests.unit.fakes import SWEEP, FakeExchange, Fakes
from tests.unit.helpers import T0, Clock, limit_terms

# The handler flushes metrics after each run; with none recorded Powertools warns, which says nothing here.
pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

WINDOW = timedelta(hours=24)


def stored(fakes: Fakes, status: OrderStatus = OrderStatus.PLACED, at: timedelta = timedelta(0)) -> Order:
    order = fakes.orders.add(Order.create("acme", limit_terms(quantity=10), T0 + at), T0 + SWEEP)
    if status is OrderStatus.PLACED:
        order = fakes.orders.update(order.placed("X-" + order.id[:4], T0 + at), None)
        fakes.exchange.accepted[order.id] = order.exchange_order_id or ""
    elif status is OrderStatus.FAILED:
        order = fakes.orders.update(order.failed("exchange unavailable after 3 attempts", T0 + at), None)
    return order


def run(fakes: Fakes, limit: int = 100) -> dict[Check, int]:
    return reconcile_orders(fakes.dependencies(), limit=limit, failed_window=WINDOW).checks


def test_a_fill_whose_report_was_lost_is_repaired_from_the_exchanges_status() -> None:
    fakes = Fakes(clock=Clock(T0 + timedelta(minutes=5)))
    order = stored(fakes)
    fakes.exchange.states[order.id] = VenueOrderState(
        order.exchange_order_id, OrderStatus.FILLED, 10, 0, Decimal("99.40")
    )
    checks = run(fakes)
    assert checks[Check.REPAIRED] == 1
    repaired = fakes.orders.orders[order.id]
    assert (repaired.status, repaired.filled_quantity, repaired.average_fill_price) == (
        OrderStatus.FILLED,
        10,
        Decimal("99.40"),
    )
    assert run(fakes)[Check.REPAIRED] == 0  # done orders leave the reconciler's index


def test_an_order_that_changed_within_the_settle_time_is_left_for_a_later_pass() -> None:
    # Its fill's report may still be on its way: merged from the status answer first, the fill would
    # have no report (no price per execution, an event without its execution).
    clock = Clock(T0 + timedelta(seconds=30))
    fakes = Fakes(clock=clock)
    order = stored(fakes)
    fakes.exchange.states[order.id] = VenueOrderState(order.exchange_order_id, OrderStatus.FILLED, 10, 0, Decimal("99"))
    settle = timedelta(seconds=60)
    checks = reconcile_orders(fakes.dependencies(), limit=100, failed_window=WINDOW, settle=settle).checks
    assert checks[Check.SETTLING] == 1
    assert checks[Check.REPAIRED] == 0
    assert fakes.orders.orders[order.id].status is OrderStatus.PLACED
    clock.now += timedelta(seconds=31)  # now 61 s after its last change
    checks = reconcile_orders(fakes.dependencies(), limit=100, failed_window=WINDOW, settle=settle).checks
    assert checks[Check.REPAIRED] == 1


def test_a_failed_order_the_exchange_holds_is_corrected() -> None:
    fakes = Fakes(clock=Clock(T0 + timedelta(hours=1)))
    order = stored(fakes, OrderStatus.FAILED)
    fakes.exchange.states[order.id] = VenueOrderState("X7", OrderStatus.PARTIALLY_FILLED, 6, 4, Decimal("10"))
    assert run(fakes)[Check.CORRECTED] == 1
    corrected = fakes.orders.orders[order.id]
    assert (corrected.status, corrected.filled_quantity, corrected.failure_reason) == (
        OrderStatus.PARTIALLY_FILLED,
        6,
        None,
    )


def test_an_answer_older_than_what_we_know_changes_nothing() -> None:
    fakes = Fakes(clock=Clock(T0 + timedelta(minutes=5)))
    order = stored(fakes)
    ahead = fakes.orders.update(
        order.reconciled_with(VenueOrderState(order.exchange_order_id, OrderStatus.FILLED, 10, 0, Decimal("5")), T0),
        None,
    )
    fakes.exchange.states[order.id] = VenueOrderState(
        order.exchange_order_id, OrderStatus.PARTIALLY_FILLED, 4, 6, Decimal("5")
    )
    run(fakes)
    assert fakes.orders.orders[order.id] == ahead


def test_failed_orders_are_compared_for_a_day_then_dropped() -> None:
    clock = Clock(T0 + timedelta(hours=1))
    fakes = Fakes(clock=clock)
    order = stored(fakes, OrderStatus.FAILED)
    assert run(fakes)[Check.AGREES] == 1  # the exchange does not know it either
    clock.now = T0 + WINDOW + timedelta(minutes=1)
    assert run(fakes)[Check.DROPPED] == 1
    assert run(fakes)[Check.DROPPED] == 0
    assert fakes.exchange.status_calls == [order.id]


def test_each_run_is_bounded_and_goes_on_from_its_cursor_until_the_book_is_covered() -> None:
    fakes = Fakes(clock=Clock(T0 + timedelta(minutes=5)))
    orders = [stored(fakes) for _ in range(5)]
    asked: list[str] = []
    for _ in range(3):
        before = len(fakes.exchange.status_calls)
        reconcile_orders(fakes.dependencies(), limit=2, failed_window=WINDOW)
        asked.extend(fakes.exchange.status_calls[before:])
        assert len(fakes.exchange.status_calls) - before <= 2
    assert sorted(asked) == sorted(o.id for o in orders)  # every order once over three runs
    assert fakes.cursor.position == ReconcileCursor(0, None).to_text()  # back at the start


def test_an_exchange_that_cannot_be_asked_changes_nothing_and_is_counted() -> None:
    fakes = Fakes(clock=Clock(T0 + timedelta(minutes=5)), exchange=FakeExchange())
    order = stored(fakes)
    fakes.exchange.status_script = ["unavailable"]
    assert run(fakes)[Check.UNAVAILABLE] == 1
    assert fakes.orders.orders[order.id].status is OrderStatus.PLACED


def test_an_open_order_the_exchange_never_had_is_reported_not_changed() -> None:
    fakes = Fakes(clock=Clock(T0 + timedelta(minutes=5)))
    order = stored(fakes)
    del fakes.exchange.accepted[order.id]
    assert run(fakes)[Check.UNKNOWN_AT_EXCHANGE] == 1
    assert fakes.orders.orders[order.id].status is OrderStatus.PLACED


def test_one_orders_storage_trouble_does_not_stop_the_run() -> None:
    fakes = Fakes(clock=Clock(T0 + timedelta(minutes=5)))
    first, second = stored(fakes), stored(fakes)
    for order in (first, second):
        fakes.exchange.states[order.id] = VenueOrderState(
            order.exchange_order_id, OrderStatus.FILLED, 10, 0, Decimal("1")
        )
    update = fakes.orders.update

    def update_all_but_first(order: Order, sweep_after: object) -> Order:
        if order.id == first.id:
            raise RuntimeError("throttled")
        return update(order, sweep_after)  # type: ignore[arg-type]

    fakes.orders.update = update_all_but_first  # type: ignore[method-assign]
    checks = run(fakes)
    assert (checks[Check.ERROR], checks[Check.REPAIRED]) == (1, 1)
    assert fakes.cursor.saves == 1


def test_a_run_out_of_time_saves_the_cursor_after_the_last_order_it_started() -> None:
    fakes = Fakes(clock=Clock(T0 + timedelta(minutes=5)))
    orders = sorted((stored(fakes) for _ in range(5)), key=lambda o: o.id)
    budget = iter([True, True, False])  # two orders' worth of time
    run = reconcile_orders(fakes.dependencies(), limit=5, failed_window=WINDOW, time_left=lambda: next(budget, False))
    assert run.checked == 2
    assert run.cursor == ReconcileCursor(0, orders[1].id)
    reconcile_orders(fakes.dependencies(), limit=5, failed_window=WINDOW)
    assert sorted(fakes.exchange.status_calls) == sorted(o.id for o in orders)  # the rest, next run
    assert len(fakes.exchange.status_calls) == 5


def test_the_reconciler_handler_runs_a_slice_and_answers_its_counts() -> None:
    fakes = Fakes(clock=Clock(T0 + timedelta(minutes=5)))
    order = stored(fakes)
    fakes.exchange.states[order.id] = VenueOrderState(order.exchange_order_id, OrderStatus.FILLED, 10, 0, Decimal("2"))
    context = LambdaContext("reconcile_orders", memory_size=512, max_runtime_ms=120_000)
    answer = reconcile.reconcile({}, context, dependencies=fakes.dependencies())
    assert answer == {"checked": 1, "repaired": 1}
    assert fakes.orders.orders[order.id].status is OrderStatus.FILLED
    assert fakes.cursor.saves == 1


def test_the_reconciler_handler_starts_no_check_without_time_for_one() -> None:
    fakes = Fakes(clock=Clock(T0 + timedelta(minutes=5)))
    stored(fakes)
    context = LambdaContext("reconcile_orders", memory_size=512, max_runtime_ms=3_000)  # less than one call needs
    assert reconcile.reconcile({}, context, dependencies=fakes.dependencies())["checked"] == 0
    assert fakes.exchange.status_calls == []
    assert fakes.cursor.position == ReconcileCursor(0, None).to_text()  # nothing skipped


def test_an_implausible_status_answer_is_not_merged_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    fakes = Fakes(clock=Clock(T0 + timedelta(minutes=5)))
    order = stored(fakes)
    # An over-fill: merged, it would stay for good (fills only grow).
    fakes.exchange.states[order.id] = VenueOrderState(order.exchange_order_id, OrderStatus.FILLED, 11, 0, Decimal("99"))
    with caplog.at_level("ERROR"):
        assert run(fakes)[Check.IMPLAUSIBLE] == 1
    assert fakes.orders.orders[order.id] == order
    assert "cum_qty 11 is above the order's quantity 10" in caplog.records[-1].reason  # type: ignore[attr-defined]
