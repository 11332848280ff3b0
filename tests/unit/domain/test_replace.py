"""A client's replace: the new terms and their checks, pending_replace and its ends, and the merge with it anywhere."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.failure_reasons import TOO_LATE_TO_REPLACE, client_failure_reason
from chalicelib.domain.model import (
    REPLACE_REFUSAL_TRANSITIONS,
    TRANSITIONS,
    ExecType,
    Order,
    OrderNotCancelable,
    OrderNotReplaceable,
    OrderStatus,
    OrderTerms,
    OrderType,
    Side,
    TimeInForce,
)
from chalicelib.domain.order_terms import ExpiryRefused
from chalicelib.domain.replace import (
    ReplaceTermsRefused,
    TermChanges,
    check_new_expiry,
    ended_without_the_exchange,
    is_same_replace,
    replacement_for,
    replacement_rejected,
    replacement_terms,
)
from tests.unit.venue import T0, execution_history, market_order

pytestmark = pytest.mark.unit


def limit_order(quantity: int = 100, filled: int = 0, status: OrderStatus = OrderStatus.PLACED) -> Order:
    terms = OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", quantity, Decimal("10.00"))
    order = Order.create("acct-1", terms, T0)
    return dataclasses.replace(order, status=status, filled_quantity=filled, exchange_order_id="X1", placed_at=T0)


def test_only_an_order_the_exchange_holds_with_nothing_pending_can_be_replaced() -> None:
    for status in (OrderStatus.PLACED, OrderStatus.PARTIALLY_FILLED):
        replaced = limit_order(status=status).replace_requested("new-id", T0)
        assert (replaced.status, replaced.replaced_by) == (OrderStatus.PENDING_REPLACE, "new-id")
    for status in set(OrderStatus) - {OrderStatus.PLACED, OrderStatus.PARTIALLY_FILLED}:
        with pytest.raises(OrderNotReplaceable) as refused:
            limit_order(status=status).replace_requested("new-id", T0)
        assert refused.value.status is status
    with pytest.raises(OrderNotReplaceable, match="once the exchange has accepted it"):
        limit_order(status=OrderStatus.PENDING).replace_requested("new-id", T0)


def test_the_replacement_takes_the_changes_and_keeps_the_rest() -> None:
    original = limit_order(quantity=100, filled=30)
    terms = replacement_terms(original, TermChanges(quantity=80, limit_price=Decimal("9.50"), client_order_id="r1"))
    assert (terms.quantity, terms.limit_price, terms.client_order_id) == (80, Decimal("9.50"), "r1")
    assert (terms.type, terms.side, terms.instrument) == (OrderType.LIMIT, Side.BUY, "US0378331005")
    replacement = replacement_for(original, terms, T0, "corr-1")
    assert (replacement.status, replacement.replaces, replacement.filled_quantity) == (
        OrderStatus.PENDING,
        original.id,
        0,
    )
    assert is_same_replace(replacement, original, terms)
    assert not is_same_replace(replacement, limit_order(), terms)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (TermChanges(quantity=30), "quantity"),  # not above the 30 filled
        (TermChanges(quantity=10), "quantity"),
        (TermChanges(stop_price=Decimal("9.00")), "stop_price"),  # a limit order takes no stop price
        (TermChanges(time_in_force=TimeInForce.GTD), "expires_at"),  # gtd needs an expiry
        (TermChanges(expires_at=T0 + timedelta(days=1)), "expires_at"),  # a day order takes none
    ],
)
def test_changes_the_original_cannot_take_are_refused_naming_the_field(changes: TermChanges, field: str) -> None:
    with pytest.raises(ReplaceTermsRefused) as refused:
        replacement_terms(limit_order(filled=30), changes)
    assert [problem.field for problem in refused.value.problems] == [field]


def test_a_market_order_takes_no_limit_price_and_a_stop_takes_no_ioc() -> None:
    with pytest.raises(ReplaceTermsRefused, match="limit_price must be absent"):
        replacement_terms(market_order(10), TermChanges(limit_price=Decimal(5)))
    stop = dataclasses.replace(
        limit_order(), terms=OrderTerms(OrderType.STOP, Side.SELL, "US0378331005", 5, None, stop_price=Decimal(9))
    )
    with pytest.raises(ReplaceTermsRefused, match="cannot be used with type stop"):
        replacement_terms(stop, TermChanges(time_in_force=TimeInForce.IOC))


def test_leaving_gtd_drops_the_expiry_and_a_new_one_must_be_in_the_future() -> None:
    gtd = dataclasses.replace(
        limit_order(),
        terms=dataclasses.replace(limit_order().terms, time_in_force=TimeInForce.GTD, expires_at=T0 + timedelta(1)),
    )
    assert replacement_terms(gtd, TermChanges(time_in_force=TimeInForce.GTC)).expires_at is None
    assert replacement_terms(gtd, TermChanges(quantity=5)).expires_at == T0 + timedelta(1)
    with pytest.raises(ExpiryRefused, match="in the future"):
        check_new_expiry(TermChanges(expires_at=T0 - timedelta(seconds=1)), T0)
    check_new_expiry(TermChanges(quantity=5), T0)  # a kept expiry is the original's own


def test_a_refused_replace_hands_the_original_back_where_its_reports_put_it() -> None:
    for filled, back_to in ((0, OrderStatus.PLACED), (30, OrderStatus.PARTIALLY_FILLED)):
        pending = limit_order(filled=filled).replace_requested("new-id", T0)
        refused = pending.replace_refused("new-id", T0)
        assert (refused.status, refused.replaced_by) == (back_to, None)
        assert back_to in REPLACE_REFUSAL_TRANSITIONS[OrderStatus.PENDING_REPLACE]
        assert pending.replace_refused("another-id", T0) == pending  # not its replacement
    # A cancel that overtook the replace stays; only the replacement's name goes.
    canceling = limit_order().replace_requested("new-id", T0).cancel_requested(T0)
    assert canceling.replace_refused("new-id", T0).status is OrderStatus.PENDING_CANCEL
    assert canceling.replace_refused("new-id", T0).replaced_by is None


def test_the_refusal_is_kept_apart_from_the_automatic_table() -> None:
    for source, targets in REPLACE_REFUSAL_TRANSITIONS.items():
        assert not targets & TRANSITIONS[source]


def test_a_rejected_replacement_tells_the_client_it_came_too_late() -> None:
    replacement = replacement_for(limit_order(), limit_order().terms, T0, None)
    rejected = replacement_rejected(replacement, "order is filled", T0)
    assert rejected.status is OrderStatus.REJECTED
    assert client_failure_reason(rejected.failure_reason) == TOO_LATE_TO_REPLACE
    assert ended_without_the_exchange(rejected)
    assert not ended_without_the_exchange(dataclasses.replace(rejected, replaces=None))
    placed = dataclasses.replace(replacement.placed("X2", T0), status=OrderStatus.CANCELED)
    assert not ended_without_the_exchange(placed)


fills_strategy = st.lists(
    st.tuples(st.integers(1, 50), st.decimals(Decimal("0.01"), Decimal("999.99"), places=2)), min_size=0, max_size=5
)


@settings(max_examples=300, deadline=None)
@given(
    fills=fills_strategy,
    ending=st.sampled_from([ExecType.REPLACED, ExecType.FILL, ExecType.CANCELED, ExecType.EXPIRED]),
    data=st.data(),
)
def test_replaces_and_cancels_anywhere_in_the_feed_end_where_the_exchange_is(fills, ending, data) -> None:
    """A replace request, its refusal and a cancel between any batches of reports: the exchange's word decides.

    ending REPLACED: the exchange took the replace; any other: it refused it (or
    never got it), and the refusal may come at any point after the request.
    """
    if ending is ExecType.FILL and not fills:
        ending = ExecType.EXPIRED
    quantity = sum(q for q, _ in fills) + (0 if ending is ExecType.FILL else 10)
    order = market_order(quantity).placed("X1", T0)
    history = execution_history(order, fills, ending)
    expected = order.apply_executions(history, T0)

    shuffled = data.draw(st.permutations(history + data.draw(st.lists(st.sampled_from(history), max_size=3))))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(shuffled)), max_size=3)))
    replace_before = data.draw(st.integers(0, len(cuts)))
    refuse_before = data.draw(st.integers(replace_before, len(cuts) + 1))
    cancel_before = data.draw(st.one_of(st.none(), st.integers(0, len(cuts))))
    state = order
    for batch, (start, end) in enumerate(zip([0, *cuts], [*cuts, len(shuffled)], strict=True)):
        if batch == replace_before:
            with contextlib.suppress(OrderNotReplaceable):  # done, or a cancel came first
                state = state.replace_requested("new-id", T0)
        if batch == refuse_before and ending is not ExecType.REPLACED:
            state = state.replace_refused("new-id", T0)
        if batch == cancel_before:
            with contextlib.suppress(OrderNotCancelable):
                state = state.cancel_requested(T0)
        state = state.apply_executions(shuffled[start:end], T0)
    if refuse_before == len(cuts) + 1 and ending is not ExecType.REPLACED:
        state = state.replace_refused("new-id", T0)
    assert (state.status, state.filled_quantity, state.average_fill_price) == (
        expected.status,
        expected.filled_quantity,
        expected.average_fill_price,
    )
    if ending is not ExecType.REPLACED:
        assert state.replaced_by is None
