"""Applying execution reports to an order: the per-order merge, the status precedence, and its order-independence."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.model import (
    CORRECTION_TRANSITIONS,
    STATUS_AFTER,
    TRANSITIONS,
    ExecType,
    ExecutionReport,
    OrderNotCancelable,
    OrderStatus,
    VenueOrderState,
)
from tests.unit.venue import T0, execution_history, market_order

pytestmark = pytest.mark.unit

PRECEDENCE = [
    OrderStatus.PENDING,
    OrderStatus.PLACED,
    OrderStatus.PARTIALLY_FILLED,
    OrderStatus.PENDING_REPLACE,
    OrderStatus.PENDING_CANCEL,
]


def test_every_transition_goes_up_the_precedence_and_terminal_statuses_lead_nowhere() -> None:
    rank = {status: i for i, status in enumerate(PRECEDENCE)}
    for source, targets in TRANSITIONS.items():
        for target in targets:
            assert rank.get(target, len(PRECEDENCE)) > rank[source], (source, target)
    for terminal in (
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.REJECTED,
        OrderStatus.EXPIRED,
        OrderStatus.REPLACED,
    ):
        assert TRANSITIONS[terminal] == frozenset()


fills_strategy = st.lists(
    st.tuples(st.integers(1, 50), st.decimals(Decimal("0.01"), Decimal("999.99"), places=2)), min_size=0, max_size=5
)


def test_fills_in_order() -> None:
    order = market_order(100)
    history = execution_history(order, [(30, Decimal("10.00")), (70, Decimal("11.00"))], ExecType.FILL)
    partially = order.apply_executions(history[:2], T0)
    assert partially.status is OrderStatus.PARTIALLY_FILLED
    assert (partially.filled_quantity, partially.remaining_quantity) == (30, 70)
    assert partially.average_fill_price == Decimal("10.0000")
    filled = partially.apply_executions(history[2:], T0)
    assert filled.status is OrderStatus.FILLED
    assert (filled.filled_quantity, filled.remaining_quantity) == (100, 0)
    assert filled.average_fill_price == Decimal("10.7000")
    assert filled.exchange_order_id == "X1"


def test_a_late_partial_fill_does_not_reopen_a_filled_order() -> None:
    order = market_order(100)
    history = execution_history(order, [(30, Decimal("10")), (70, Decimal("11"))], ExecType.FILL)
    filled = order.apply_executions([history[2]], T0)
    late = filled.apply_executions([history[1], history[0]], T0)
    assert late == filled  # unchanged, not even updated_at


def test_a_cancel_after_partial_fills_keeps_the_filled_quantity() -> None:
    order = market_order(100)
    history = execution_history(order, [(40, Decimal("5.5"))], ExecType.CANCELED)
    canceled = order.apply_executions(list(reversed(history)), T0)
    assert canceled.status is OrderStatus.CANCELED
    assert (canceled.filled_quantity, canceled.remaining_quantity) == (40, 0)


def test_a_fill_for_a_pending_order_applies_and_placement_later_keeps_it() -> None:
    order = market_order(10)
    history = execution_history(order, [(10, Decimal("3"))], ExecType.FILL)
    filled = order.apply_executions(history, T0)
    assert filled.status is OrderStatus.FILLED
    placed_later = filled.placed("X1", T0 + timedelta(seconds=5))
    assert placed_later.status is OrderStatus.FILLED
    assert placed_later.placed_at == T0 + timedelta(seconds=5)


def test_a_failed_order_the_exchange_filled_is_corrected_to_filled() -> None:
    failed = market_order(10).failed("exchange down", T0)
    history = execution_history(failed, [(10, Decimal("3"))], ExecType.FILL)
    corrected = failed.apply_executions(history, T0 + timedelta(seconds=1))
    assert corrected.status is OrderStatus.FILLED
    assert corrected.is_corrected_from(failed)
    assert (corrected.filled_quantity, corrected.average_fill_price) == (10, Decimal("3.0000"))
    assert corrected.failure_reason is None  # it did not fail
    assert corrected.placed_at == T0 + timedelta(seconds=1)


def test_a_rejection_of_a_failed_order_makes_it_rejected_in_any_order_and_is_no_correction() -> None:
    failed = market_order(10).failed("exchange down", T0)
    new, *_ = execution_history(failed, [], ExecType.EXPIRED)
    rejected = dataclasses.replace(new, exec_id="E9", exec_type=ExecType.REJECTED, seq=9)
    for batches in ([[rejected], [new]], [[new], [rejected]], [[new, rejected]]):
        state = failed
        for batch in batches:
            state = state.apply_executions(batch, T0)
        assert state.status is OrderStatus.REJECTED
    assert not failed.apply_executions([rejected], T0).is_corrected_from(failed)


def test_corrections_are_kept_apart_from_the_automatic_table() -> None:
    assert TRANSITIONS[OrderStatus.FAILED] == frozenset()  # no automatic move leaves failed
    assert OrderStatus.REJECTED not in CORRECTION_TRANSITIONS[OrderStatus.FAILED]
    assert set(CORRECTION_TRANSITIONS) == {OrderStatus.FAILED}


def venue_state_after(reports: list[ExecutionReport]) -> VenueOrderState:
    """The exchange's status answer once it has sent these reports: its latest state."""
    last = max(reports, key=lambda r: r.seq)
    status = STATUS_AFTER[last.exec_type]
    return VenueOrderState(last.exchange_order_id, status, last.cum_qty, last.leaves_qty, last.avg_price)


@settings(max_examples=300, deadline=None)
@given(
    fills=fills_strategy,
    ending=st.sampled_from([ExecType.FILL, ExecType.CANCELED, ExecType.EXPIRED]),
    starts_failed=st.booleans(),
    data=st.data(),
)
def test_reports_and_status_answers_in_any_order_end_where_the_exchange_is(fills, ending, starts_failed, data) -> None:
    """Lost reports, status answers taken at any point, a failed start: all end in the exchange's final state."""
    if ending is ExecType.FILL and not fills:
        ending = ExecType.EXPIRED
    quantity = sum(q for q, _ in fills) + (0 if ending is ExecType.FILL else 10)
    pending = market_order(quantity)
    history = execution_history(pending, fills, ending)
    expected = pending.apply_executions(history, T0)

    # Some reports lost for good; status answers as of any prefix of the history; the final answer last or not.
    kept = [r for r in history if data.draw(st.booleans())]
    answers = [venue_state_after(history[: data.draw(st.integers(1, len(history)))]) for _ in range(2)]
    answers.append(venue_state_after(history))
    events: list[ExecutionReport | VenueOrderState] = data.draw(st.permutations([*kept, *answers]))
    state = pending.failed("exchange unavailable after 3 attempts", T0) if starts_failed else pending
    for event in events:
        if isinstance(event, VenueOrderState):
            state = state.reconciled_with(event, T0)
        else:
            state = state.apply_executions([event], T0)
    assert (state.status, state.filled_quantity, state.average_fill_price) == (
        expected.status,
        expected.filled_quantity,
        expected.average_fill_price,
    )
    assert state.failure_reason is None


def test_a_lone_rejection() -> None:
    order = market_order(10)
    rejected = dataclasses.replace(execution_history(order, [], ExecType.EXPIRED)[0], exec_type=ExecType.REJECTED)
    result = order.apply_executions([rejected], T0)
    assert result.status is OrderStatus.REJECTED
    assert result.remaining_quantity == 0


@settings(max_examples=300, deadline=None)
@given(
    fills=fills_strategy,
    ending=st.sampled_from([ExecType.FILL, ExecType.CANCELED, ExecType.EXPIRED]),
    data=st.data(),
)
def test_any_permutation_with_duplicates_ends_in_the_same_state(fills, ending, data) -> None:
    if ending is ExecType.FILL and not fills:
        ending = ExecType.EXPIRED  # a full fill needs at least one fill
    quantity = sum(q for q, _ in fills) + (0 if ending is ExecType.FILL else 10)
    order = market_order(quantity)
    history = execution_history(order, fills, ending)
    expected = order.apply_executions(history, T0)

    duplicated = history + data.draw(st.lists(st.sampled_from(history), max_size=len(history) * 2))
    shuffled = data.draw(st.permutations(duplicated))
    # Delivered in batches of any size, one after another.
    cuts = sorted(data.draw(st.lists(st.integers(0, len(shuffled)), max_size=4)))
    state = order
    for start, end in zip([0, *cuts], [*cuts, len(shuffled)], strict=True):
        state = state.apply_executions(shuffled[start:end], T0)
    assert (state.status, state.filled_quantity, state.average_fill_price) == (
        expected.status,
        expected.filled_quantity,
        expected.average_fill_price,
    )


@settings(max_examples=300, deadline=None)
@given(
    fills=fills_strategy,
    ending=st.sampled_from([ExecType.FILL, ExecType.CANCELED, ExecType.EXPIRED]),
    data=st.data(),
)
def test_a_cancel_request_anywhere_in_the_feed_changes_no_final_state(fills, ending, data) -> None:
    """The client's cancel may come between any two batches: the exchange's final word still decides."""
    if ending is ExecType.FILL and not fills:
        ending = ExecType.EXPIRED
    quantity = sum(q for q, _ in fills) + (0 if ending is ExecType.FILL else 10)
    order = market_order(quantity).placed("X1", T0)
    history = execution_history(order, fills, ending)
    expected = order.apply_executions(history, T0)

    shuffled = data.draw(st.permutations(history + data.draw(st.lists(st.sampled_from(history), max_size=3))))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(shuffled)), max_size=3)))
    cancel_before = data.draw(st.integers(0, len(cuts)))
    state = order
    for batch, (start, end) in enumerate(zip([0, *cuts], [*cuts, len(shuffled)], strict=True)):
        if batch == cancel_before:
            with contextlib.suppress(OrderNotCancelable):  # the feed may have settled it already
                state = state.cancel_requested(T0)
            if not state.is_terminal:
                assert state.status is OrderStatus.PENDING_CANCEL
        state = state.apply_executions(shuffled[start:end], T0)
        # Until the final word, a pending cancel stays pending; fills still count.
        if state.status is not OrderStatus.PENDING_CANCEL:
            assert state.is_terminal or batch < cancel_before
    assert (state.status, state.filled_quantity, state.average_fill_price) == (
        expected.status,
        expected.filled_quantity,
        expected.average_fill_price,
    )
