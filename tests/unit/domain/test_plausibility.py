"""Plausibility of what the exchange says about an order: each rule, and that true histories always pass."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.model import (
    ExecType,
    ExecutionReport,
    Order,
    OrderStatus,
    OrderTerms,
    OrderType,
    Side,
    VenueOrderState,
)
from chalicelib.domain.plausibility import (
    implausible_reports,
    price_problem,
    report_problem,
    venue_state_problem,
)
from tests.unit.venue import T0, execution_history, market_order

pytestmark = pytest.mark.unit


def limit_order(side: Side, limit: str, quantity: int = 10, exchange_order_id: str | None = "X1") -> Order:
    terms = OrderTerms(OrderType.LIMIT, side, "US0378331005", quantity, Decimal(limit))
    order = Order.create("acct-1", terms, T0)
    return order.placed(exchange_order_id, T0) if exchange_order_id else order


def fill(order: Order, **changes: object) -> ExecutionReport:
    """A complete, plausible fill of the order at 10.00, with changes."""
    quantity = order.terms.quantity
    report = ExecutionReport(
        exec_id="E9",
        order_id=order.id,
        exchange_order_id="X1",
        exec_type=ExecType.FILL,
        last_qty=quantity,
        last_price=Decimal("10.00"),
        cum_qty=quantity,
        leaves_qty=0,
        avg_price=Decimal("10.00"),
        transact_time=T0,
        seq=9,
    )
    return dataclasses.replace(report, **changes)  # type: ignore[arg-type]


BUY = limit_order(Side.BUY, "10.50")


def test_a_plausible_fill_passes() -> None:
    assert report_problem(BUY, fill(BUY)) is None


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"cum_qty": 11, "last_qty": 11}, "cum_qty 11 is above the order's quantity 10"),
        ({"exec_type": ExecType.PARTIAL_FILL, "last_qty": 5, "cum_qty": 4, "leaves_qty": 6}, "last_qty 5 is above"),
        ({"exec_type": ExecType.PARTIAL_FILL, "last_qty": 4, "cum_qty": 4, "leaves_qty": 7}, "+ leaves_qty 7"),
        ({"exec_type": ExecType.CANCELED, "last_qty": 0, "cum_qty": 4, "leaves_qty": 6}, "leaves_qty 6 on a canceled"),
        ({"cum_qty": 9, "last_qty": 9}, "a fill report with cum_qty 9"),
        ({"exec_type": ExecType.PARTIAL_FILL, "last_qty": 0, "cum_qty": 4, "leaves_qty": 6}, "with last_qty 0"),
        ({"last_price": None}, "without a positive last_price"),
        ({"last_price": Decimal(0)}, "without a positive last_price"),
        ({"avg_price": None}, "cum_qty 10 without a positive avg_price"),
        (
            {"exec_type": ExecType.CANCELED, "last_qty": 2, "cum_qty": 4, "leaves_qty": 0, "last_price": None},
            "last_qty 2 on a canceled report",
        ),
        (
            {"exec_type": ExecType.NEW, "cum_qty": 0, "last_qty": 0, "leaves_qty": 10, "last_price": None},
            "avg_price 10.00 with nothing filled",
        ),
        ({"last_price": Decimal("10.51")}, "last_price 10.51 is above the buy limit 10.50"),
        ({"avg_price": Decimal("10.5001")}, "avg_price 10.5001 is above the buy limit 10.50"),
        ({"exchange_order_id": "X-foreign"}, "exchange_order_id 'X-foreign' is not the order's ('X1')"),
        ({"avg_price": Decimal("1e400")}, "is not below"),
        ({"avg_price": Decimal("Infinity")}, "not a finite number"),
        ({"last_price": Decimal("1.000000001")}, "more than 8 decimal places"),
        ({"order_id": "someone-else"}, "report is for order someone-else"),
    ],
)
def test_each_rule_refuses_what_it_must(changes: dict[str, object], fragment: str) -> None:
    problem = report_problem(BUY, fill(BUY, **changes))
    assert problem is not None
    assert fragment in problem


def test_a_sell_limit_refuses_fills_below_it_and_a_market_order_has_no_limit() -> None:
    sell = limit_order(Side.SELL, "10.00")
    assert report_problem(sell, fill(sell)) is None
    assert "below the sell limit 10.00" in (report_problem(sell, fill(sell, last_price=Decimal("9.99"))) or "")
    market = market_order(10).placed("X1", T0)
    assert report_problem(market, fill(market, last_price=Decimal("999"), avg_price=Decimal("999"))) is None


def test_prices_are_bounded_in_magnitude_and_decimals_not_in_trailing_zeros() -> None:
    assert price_problem("p", Decimal("999999999.99999999")) is None
    assert price_problem("p", Decimal("100.000000000000000000")) is None  # the value is 100
    assert price_problem("p", Decimal("1000000000")) is not None
    assert price_problem("p", Decimal("-1")) is not None
    assert price_problem("p", Decimal("NaN")) is not None


def test_without_a_recorded_exchange_order_id_any_one_id_passes_but_a_batch_must_agree() -> None:
    unplaced = limit_order(Side.BUY, "10.50", exchange_order_id=None)
    first = fill(unplaced, exchange_order_id="A", exec_id="E1")
    assert implausible_reports(unplaced, [first]) == {}
    second = fill(unplaced, exchange_order_id="B", exec_id="E2")
    problems = implausible_reports(unplaced, [first, second])
    assert set(problems) == {first, second}
    assert "more than one exchange_order_id" in problems[first]
    assert implausible_reports(unplaced, [second, first]) == problems


def test_a_batch_keeps_its_plausible_reports() -> None:
    history = execution_history(BUY, [(4, Decimal("10.00")), (6, Decimal("10.50"))], ExecType.FILL)
    overfill = fill(BUY, cum_qty=12, last_qty=2, exec_id="E-over")
    problems = implausible_reports(BUY, [*history, overfill])
    assert list(problems) == [overfill]


fills_strategy = st.lists(
    st.tuples(st.integers(1, 50), st.decimals(Decimal("0.01"), Decimal("999.99"), places=2)), min_size=0, max_size=5
)


@settings(max_examples=200, deadline=None)
@given(
    fills=fills_strategy,
    ending=st.sampled_from([ExecType.FILL, ExecType.CANCELED, ExecType.EXPIRED]),
    order=st.permutations(range(8)),
)
def test_a_venues_true_history_is_plausible_and_the_verdict_ignores_arrival_order(
    fills: list[tuple[int, Decimal]], ending: ExecType, order: list[int]
) -> None:
    quantity = sum(qty for qty, _ in fills) + (0 if ending is ExecType.FILL and fills else 5)
    placed = market_order(quantity).placed("X1", T0)
    history = execution_history(placed, fills, ending)
    if ending is ExecType.FILL and not fills:
        history = history[:1]  # a fill needs at least one execution
    assert implausible_reports(placed, history) == {}
    # The same history with an over-fill mixed in: only it is refused, wherever it arrives.
    overfill = dataclasses.replace(history[-1], exec_id="E-over", cum_qty=quantity + 1, last_qty=1)
    mixed = [*history, overfill]
    shuffled = [mixed[i] for i in order if i < len(mixed)] + mixed[len(order) :]
    assert implausible_reports(placed, shuffled) == implausible_reports(placed, mixed)
    assert list(implausible_reports(placed, mixed)) == [overfill]


def test_a_status_answer_is_checked_as_a_report_is() -> None:
    def state(**changes: object) -> VenueOrderState:
        plausible = VenueOrderState("X1", OrderStatus.PARTIALLY_FILLED, 4, 6, Decimal("10.00"))
        return dataclasses.replace(plausible, **changes)  # type: ignore[arg-type]

    assert venue_state_problem(BUY, state()) is None
    assert venue_state_problem(BUY, state(exchange_order_id=None)) is None
    refused = {
        "above the order's quantity": state(cum_qty=11, leaves_qty=0),
        "+ leaves_qty 7": state(leaves_qty=7),
        "status filled with cum_qty 4": state(status=OrderStatus.FILLED, leaves_qty=0),
        "without a positive avg_price": state(avg_price=None),
        "is not the order's": state(exchange_order_id="X-foreign"),
        "above the buy limit": state(avg_price=Decimal("11")),
        "is not below": state(avg_price=Decimal("1e400")),
    }
    for fragment, answer in refused.items():
        assert fragment in (venue_state_problem(BUY, answer) or ""), fragment


def test_prices_of_zero_on_a_report_that_fills_nothing_are_not_held_against_a_sell_limit() -> None:
    # FIX venues commonly send LastPx/AvgPx 0 on new, canceled and expired reports.
    order = limit_order(Side.SELL, "100.00")
    for exec_type in (ExecType.NEW, ExecType.CANCELED, ExecType.EXPIRED):
        leaves = order.terms.quantity if exec_type is ExecType.NEW else 0
        zero = Decimal(0)
        report = fill(
            order, exec_type=exec_type, last_qty=0, cum_qty=0, leaves_qty=leaves, last_price=zero, avg_price=zero
        )
        assert report_problem(order, report) is None, exec_type


def test_a_computed_average_with_many_decimals_is_plausible_but_one_beyond_the_limit_is_not() -> None:
    order = limit_order(Side.SELL, "100.00")
    partial = {"exec_type": ExecType.PARTIAL_FILL, "last_qty": 3, "cum_qty": 3, "leaves_qty": 7}
    fine = fill(order, last_price=Decimal("100.01"), avg_price=Decimal("100.0066666666667"), **partial)
    assert report_problem(order, fine) is None
    below = fill(order, last_price=Decimal("100.01"), avg_price=Decimal("99.9966666666667"), **partial)
    assert "below the sell limit" in (report_problem(order, below) or "")


def stop_order(order_type: OrderType, side: Side, stop: str, limit: str | None) -> Order:
    terms = OrderTerms(
        order_type, side, "US0378331005", 10, None if limit is None else Decimal(limit), stop_price=Decimal(stop)
    )
    return Order.create("acct-1", terms, T0).placed("X1", T0)


def test_a_stop_limit_order_fills_within_its_limit_as_a_limit_order_does() -> None:
    buy = stop_order(OrderType.STOP_LIMIT, Side.BUY, stop="9.00", limit="10.00")
    assert report_problem(buy, fill(buy)) is None
    above = fill(buy, last_price=Decimal("10.01"), avg_price=Decimal("10.01"))
    assert report_problem(buy, above) == "last_price 10.01 is above the buy limit 10.00"
    sell = stop_order(OrderType.STOP_LIMIT, Side.SELL, stop="11.00", limit="10.50")
    assert report_problem(sell, fill(sell)) == "last_price 10.00 is below the sell limit 10.50"


def test_a_stop_order_fills_at_any_price_as_a_market_order_does() -> None:
    # Triggered, it is a market order: neither the stop price nor anything else bounds its fills.
    buy = stop_order(OrderType.STOP, Side.BUY, stop="20.00", limit=None)
    assert report_problem(buy, fill(buy)) is None
    assert report_problem(buy, fill(buy, last_price=Decimal("30.00"), avg_price=Decimal("30.00"))) is None
