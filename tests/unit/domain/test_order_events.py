"""Order events derived from stored changes: which events, in which order, with which snapshot and execution."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.model import (
    CORRECTION_TRANSITIONS,
    OPERATOR_TRANSITIONS,
    TRANSITIONS,
    ExecType,
    ExecutionReport,
    InvalidTransition,
    Order,
    OrderError,
    OrderStatus,
    OrderTerms,
    OrderType,
    Side,
    VenueOrderState,
)
from chalicelib.domain.order_events import OrderChange, OrderEventType, derive_events

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TERMS = OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", 10, Decimal("99.5"))


def stored(order: Order, at: datetime | None = None) -> Order:
    """The order as the table holds it after one more write."""
    return dataclasses.replace(order, version=order.version + 1, updated_at=at or order.updated_at)


def new_order() -> Order:
    return stored(Order.create("acct-1", TERMS, T0))


def report(n: int, exec_type: ExecType, qty: int, cum: int, avg: str | None = "99.5") -> ExecutionReport:
    return ExecutionReport(
        exec_id=f"E{n}",
        order_id="",  # set by for_order()
        exchange_order_id="X1",
        exec_type=exec_type,
        last_qty=qty,
        last_price=Decimal("99.5") if qty else None,
        cum_qty=cum,
        leaves_qty=10 - cum,
        avg_price=Decimal(avg) if avg else None,
        transact_time=T0 + timedelta(seconds=n),
        seq=n,
    )


def for_order(order: Order, *reports: ExecutionReport) -> list[ExecutionReport]:
    return [dataclasses.replace(r, order_id=order.id) for r in reports]


def placed_order() -> Order:
    return stored(new_order().placed("X1", T0 + timedelta(seconds=1)))


def test_a_new_order_is_one_created_event_with_its_first_version_in_the_change_key() -> None:
    order = new_order()
    (event,) = derive_events(OrderChange(None, order), [])
    assert event.type is OrderEventType.CREATED
    assert event.order == order and event.execution is None
    assert event.time == order.updated_at
    assert event.change_key == f"{order.id}#1#0"


def test_a_status_change_is_the_event_of_the_new_status() -> None:
    before = new_order()
    after = placed_order()
    (event,) = derive_events(OrderChange(before, after), [])
    assert (event.type, event.order, event.change_key) == (OrderEventType.PLACED, after, f"{after.id}#2#0")


def test_fills_of_one_change_are_one_event_each_oldest_first_with_their_reports() -> None:
    before = placed_order()
    reports = for_order(
        before,
        report(1, ExecType.PARTIAL_FILL, 3, 3, "99"),
        report(2, ExecType.PARTIAL_FILL, 3, 6, "99.25"),
        report(3, ExecType.FILL, 4, 10, "99.5"),
    )
    after = stored(before.apply_executions(reports, T0 + timedelta(seconds=5)))
    events = derive_events(OrderChange(before, after), list(reversed(reports)))
    assert [e.type for e in events] == [OrderEventType.PARTIAL_FILL, OrderEventType.PARTIAL_FILL, OrderEventType.FILL]
    assert [e.execution for e in events] == reports
    assert [(e.order.status, e.order.filled_quantity, e.order.average_fill_price) for e in events] == [
        (OrderStatus.PARTIALLY_FILLED, 3, Decimal("99")),
        (OrderStatus.PARTIALLY_FILLED, 6, Decimal("99.25")),
        (OrderStatus.FILLED, 10, Decimal("99.5")),
    ]
    assert events[-1].order == after
    assert [e.change_key for e in events] == [f"{after.id}#3#{n}" for n in range(3)]
    assert all(e.time == after.updated_at for e in events)


def test_reports_of_earlier_changes_and_non_fills_are_not_events_again() -> None:
    placed = placed_order()
    first = for_order(placed, report(1, ExecType.PARTIAL_FILL, 4, 4))
    before = stored(placed.apply_executions(first, T0 + timedelta(seconds=2)))
    later = for_order(placed, report(2, ExecType.PARTIAL_FILL, 2, 6), report(3, ExecType.EXPIRED, 0, 6))
    after = stored(before.apply_executions(later, T0 + timedelta(seconds=3)))
    events = derive_events(OrderChange(before, after), first + later + later)  # a repeated report too
    assert [(e.type, e.execution) for e in events] == [
        (OrderEventType.PARTIAL_FILL, later[0]),
        (OrderEventType.EXPIRED, None),
    ]
    # The fill's snapshot shows the order as the fill left it: still open, 6 filled.
    assert (events[0].order.status, events[0].order.filled_quantity) == (OrderStatus.PARTIALLY_FILLED, 6)
    assert events[1].order == after


def test_fills_that_arrive_after_a_cancel_request_keep_pending_cancel_then_the_cancel_follows() -> None:
    before = stored(placed_order().cancel_requested(T0 + timedelta(seconds=2)))
    reports = for_order(before, report(1, ExecType.PARTIAL_FILL, 2, 2), report(2, ExecType.CANCELED, 0, 2))
    after = stored(before.apply_executions(reports, T0 + timedelta(seconds=3)))
    assert after.status is OrderStatus.CANCELED
    events = derive_events(OrderChange(before, after), reports)
    assert [e.type for e in events] == [OrderEventType.PARTIAL_FILL, OrderEventType.CANCELED]
    assert events[0].execution == reports[0]
    assert (events[0].order.status, events[0].order.filled_quantity) == (OrderStatus.PENDING_CANCEL, 2)
    assert events[1].order == after and events[1].execution is None


def test_a_fill_while_pending_cancel_is_a_partial_fill_showing_the_order_as_it_is() -> None:
    before = stored(placed_order().cancel_requested(T0 + timedelta(seconds=2)))
    reports = for_order(before, report(1, ExecType.PARTIAL_FILL, 2, 2))
    after = stored(before.apply_executions(reports, T0 + timedelta(seconds=3)))
    (event,) = derive_events(OrderChange(before, after), reports)
    assert (event.type, event.order, event.execution) == (OrderEventType.PARTIAL_FILL, after, reports[0])


def test_a_fill_known_only_from_the_exchanges_status_answer_has_no_execution() -> None:
    before = placed_order()
    venue = VenueOrderState("X1", OrderStatus.FILLED, cum_qty=10, leaves_qty=0, avg_price=Decimal("99.5"))
    after = stored(before.reconciled_with(venue, T0 + timedelta(seconds=9)))
    (event,) = derive_events(OrderChange(before, after), [])
    assert (event.type, event.order, event.execution) == (OrderEventType.FILL, after, None)


def test_an_operators_reopening_of_a_failed_order_is_reopened() -> None:
    failed = stored(new_order().failed("exchange unavailable: timeout", T0 + timedelta(seconds=1)))
    reopened = stored(failed.reopened(T0 + timedelta(seconds=2), by="ops"))
    (failure,) = derive_events(OrderChange(new_order(), failed), [])
    (event,) = derive_events(OrderChange(failed, reopened), [])
    assert failure.type is OrderEventType.FAILED
    assert event.type is OrderEventType.REOPENED


def test_a_change_the_client_cannot_see_is_no_event() -> None:
    before = new_order()
    after = stored(before.attempt_failed("exchange unavailable", T0 + timedelta(seconds=1)))
    assert derive_events(OrderChange(before, after), []) == []


# --- Property: an order's events, deduplicated, walk the transition tables. ---

MOVES = {
    status: TRANSITIONS[status]
    | OPERATOR_TRANSITIONS.get(status, frozenset())
    | CORRECTION_TRANSITIONS.get(status, frozenset())
    for status in TRANSITIONS
}
# The one move the domain makes outside the tables: Order._merged lets the exchange's rejection of an order we
# recorded failed make it rejected (not a correction, so not in CORRECTION_TRANSITIONS; see its comment).
MOVES[OrderStatus.FAILED] = MOVES[OrderStatus.FAILED] | {OrderStatus.REJECTED}

# Reports weigh most: the fills within one change are where the derivation has the most to get right.
STEPS = ("place", "cancel", "fail", "reopen", "attempt_failed", "reconcile", "canceled_unplaced", *["reports"] * 5)
VENUE_TYPES = (
    ExecType.NEW,
    ExecType.PARTIAL_FILL,
    ExecType.FILL,
    ExecType.CANCELED,
    ExecType.EXPIRED,
    ExecType.REJECTED,
)


class Venue:
    """The exchange's side of one order: a consistent series of reports (fills add up, nothing after the end)."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        self.reports: list[ExecutionReport] = []
        self.cum = 0
        self.done: OrderStatus | None = None
        self.acknowledged = False

    def report(self, exec_type: ExecType, qty: int, at: datetime) -> ExecutionReport | None:
        if self.done is not None or (exec_type is ExecType.REJECTED and (self.cum or self.acknowledged)):
            return None
        remaining = TERMS.quantity - self.cum
        if exec_type is ExecType.PARTIAL_FILL:
            if remaining < 2:
                return None
            qty = 1 + qty % (remaining - 1)
        elif exec_type is ExecType.FILL:
            qty = remaining
        else:
            qty = 0
        self.cum += qty
        n = len(self.reports) + 1
        average = Decimal("99.5") if self.cum else None
        filled = ExecutionReport(
            f"E{n}", self.order_id, "X1", exec_type, qty, Decimal("99.5") if qty else None, self.cum,
            TERMS.quantity - self.cum, average, at, n,
        )  # fmt: skip
        self.acknowledged = True
        if exec_type in (ExecType.FILL, ExecType.CANCELED, ExecType.EXPIRED, ExecType.REJECTED):
            self.done = {
                ExecType.FILL: OrderStatus.FILLED,
                ExecType.CANCELED: OrderStatus.CANCELED,
                ExecType.EXPIRED: OrderStatus.EXPIRED,
                ExecType.REJECTED: OrderStatus.REJECTED,
            }[exec_type]
        self.reports.append(filled)
        return filled

    def state(self) -> VenueOrderState | None:
        if not self.acknowledged:
            return None
        status = self.done or (OrderStatus.PARTIALLY_FILLED if self.cum else OrderStatus.PLACED)
        average = Decimal("99.5") if self.cum else None
        return VenueOrderState("X1", status, self.cum, TERMS.quantity - self.cum, average)


def next_version(order: Order, step: str, draw: st.DrawFn, venue: Venue, now: datetime) -> Order:
    """The order after one step of its life (InvalidTransition / OrderError when the step does not apply)."""
    if step == "place":
        return order.placed("X1", now)
    if step == "cancel":
        return order.cancel_requested(now)
    if step == "fail":
        return order.failed("exchange unavailable", now)
    if step == "reopen":
        return order.reopened(now, "ops")
    if step == "attempt_failed":
        return order.attempt_failed("exchange unavailable", now)
    if step == "canceled_unplaced":
        return order.canceled_unplaced(now + timedelta(hours=1))
    if step == "reconcile":
        state = venue.state()
        if state is None:
            raise InvalidTransition(order.status, order.status)
        return order.reconciled_with(state, now)
    kinds = draw(st.lists(st.sampled_from(VENUE_TYPES), min_size=1, max_size=4))
    fresh = [venue.report(kind, draw(st.integers(0, 9)), now) for kind in kinds]
    if not venue.reports:
        raise InvalidTransition(order.status, order.status)  # nothing to report yet
    # The feed repeats and reorders: some earlier reports again, all in any order.
    repeated = draw(st.lists(st.sampled_from(venue.reports), max_size=2))
    batch = draw(st.permutations([r for r in fresh if r is not None] + repeated))
    return order.apply_executions(list(batch), now)


@st.composite
def order_lives(draw: st.DrawFn) -> tuple[list[OrderChange], list[ExecutionReport]]:
    """A random life of one order as the table stored it, and every report the exchange sent for it."""
    order = new_order()
    venue = Venue(order.id)
    changes = [OrderChange(None, order)]
    for n, step in enumerate(draw(st.lists(st.sampled_from(STEPS), max_size=14)), start=1):
        try:
            changed = next_version(order, step, draw, venue, T0 + timedelta(seconds=n))
        except OrderError:
            continue
        if changed != order:
            changes.append(OrderChange(order, stored(changed)))
            order = stored(changed)
    return changes, venue.reports


@settings(max_examples=400, deadline=None)
@given(order_lives())
def test_an_orders_deduplicated_events_are_a_path_in_the_transition_tables(
    life: tuple[list[OrderChange], list[ExecutionReport]],
) -> None:
    changes, reports = life
    events = [event for change in changes for event in derive_events(change, reports)]
    assert events[0].type is OrderEventType.CREATED and events[0].order.status is OrderStatus.PENDING
    statuses = [event.order.status for event in events]
    path = [status for n, status in enumerate(statuses) if n == 0 or status is not statuses[n - 1]]
    for source, target in itertools.pairwise(path):
        assert target in MOVES[source], f"{source} -> {target} in {[e.type.value for e in events]}"
    # Every event is logged under a key of its own; fills only ever add up.
    assert len({event.change_key for event in events}) == len(events)
    filled = [event.order.filled_quantity for event in events]
    assert filled == sorted(filled)
    # The last event shows the order as it ended (if anything visible happened at all).
    if len(changes) > 1 and events[-1].order != changes[-1].after:
        assert derive_events(changes[-1], reports) == []
