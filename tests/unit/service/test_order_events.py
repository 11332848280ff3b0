"""Recording order changes: their events logged per account in order, once, and pushed to listening clients."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.adapters.streaming import StreamConnection
from chalicelib.domain.model import ExecType, ExecutionReport, Order
from chalicelib.domain.order_events import OrderChange, OrderEvent, OrderEventType
from chalicelib.entrypoints.event_models import event_body
from chalicelib.service.order_events import record_changes, record_order_changes
from tests.unit.fakes import Fakes
from tests.unit.fakes_streaming import (
    FakeOrderEventLog,
    FakeStreamConnections,
    LogWatchingPusher,
    UnreadableStreamConnections,
)
from tests.unit.helpers import T0, limit_terms

pytestmark = pytest.mark.unit


def stored(order: Order, seconds: int = 0) -> Order:
    return dataclasses.replace(order, version=order.version + 1, updated_at=T0 + timedelta(seconds=seconds))


def life_of(account_id: str, fakes: Fakes) -> list[OrderChange]:
    """An order of the account created, placed and filled in one report (stored in fakes.executions)."""
    created = stored(Order.create(account_id, limit_terms(quantity=5), T0))
    placed = stored(created.placed("X1", T0), 1)
    fill = ExecutionReport(
        "E1", placed.id, "X1", ExecType.FILL, 5, Decimal("99.5"), 5, 0, Decimal("99.5"), T0 + timedelta(seconds=2), 1
    )
    fakes.executions.add_many([fill])
    filled = stored(placed.apply_executions([fill], T0), 2)
    return [OrderChange(None, created), OrderChange(created, placed), OrderChange(placed, filled)]


def listening(fakes: Fakes, connection_id: str, account_id: str) -> None:
    fakes.connections.add(StreamConnection(connection_id, account_id, "key-1", T0), T0 + timedelta(hours=2))
    fakes.connections.start_listening(connection_id, 0)


def test_the_events_of_the_changes_are_logged_in_order_with_their_client_json() -> None:
    fakes = Fakes()
    changes = life_of("acct-1", fakes)
    logged = record_order_changes(changes, fakes.dependencies(), event_body)
    assert [(e.account_id, e.sequence, e.type) for e in logged] == [
        ("acct-1", 1, "created"),
        ("acct-1", 2, "placed"),
        ("acct-1", 3, "fill"),
    ]
    assert fakes.event_log.events["acct-1"] == logged
    fill = logged[-1].to_json()
    assert fill["id"] == "00000000000000000003"
    assert fill["time"] == "2026-11-23T12:00:02.000Z"
    assert fill["order"]["id"] == changes[-1].after.id
    assert (fill["order"]["status"], fill["order"]["filled_quantity"], fill["order"]["remaining_quantity"]) == (
        "filled",
        5,
        0,
    )
    assert fill["execution"] == {
        "id": "E1",
        "type": "fill",
        "quantity": 5,
        "price": 99.5,
        "time": "2026-11-23T12:00:02.000Z",
        "cumulative_quantity": 5,
        "average_price": 99.5,
    }
    assert logged[0].to_json()["execution"] is None
    # Only the change that filled something read the order's executions.
    assert fakes.executions.listed == [changes[-1].after.id]


def test_each_account_gets_its_own_log_and_interleaved_changes_keep_their_order() -> None:
    fakes = Fakes()
    first, second = life_of("acct-1", fakes), life_of("acct-2", fakes)
    logged = record_order_changes(
        [first[0], first[1], second[0], first[2], second[1]], fakes.dependencies(), event_body
    )
    assert [(e.account_id, e.sequence, e.type) for e in logged] == [
        ("acct-1", 1, "created"),
        ("acct-1", 2, "placed"),
        ("acct-2", 1, "created"),
        ("acct-1", 3, "fill"),
        ("acct-2", 2, "placed"),
    ]
    assert {e.order_id for e in fakes.event_log.events["acct-2"]} == {second[0].after.id}


def test_changes_recorded_again_log_nothing_twice_and_come_back_as_logged() -> None:
    fakes = Fakes()
    changes = life_of("acct-1", fakes)
    first = record_order_changes(changes[:2], fakes.dependencies(), event_body)
    again = record_order_changes(changes, fakes.dependencies(), event_body)
    assert again[:2] == first
    assert [e.sequence for e in fakes.event_log.events["acct-1"]] == [1, 2, 3]


def test_a_change_nobody_can_see_logs_nothing() -> None:
    fakes = Fakes()
    created = stored(Order.create("acct-1", limit_terms(), T0))
    retried = stored(created.attempt_failed("exchange unavailable", T0), 1)
    assert record_order_changes([OrderChange(created, retried)], fakes.dependencies(), event_body) == []
    assert fakes.event_log.events == {}
    assert fakes.executions.listed == []


def test_logged_events_are_pushed_to_the_accounts_listening_connections_only() -> None:
    fakes = Fakes()
    listening(fakes, "conn-mine", "acct-1")
    listening(fakes, "conn-other", "acct-2")
    logged = record_order_changes(life_of("acct-1", fakes), fakes.dependencies(), event_body)
    assert fakes.pusher.messages_to("conn-mine") == [{"stream": "orders", "event": e.to_json()} for e in logged]
    assert fakes.pusher.messages_to("conn-other") == []


def test_a_failing_push_does_not_fail_the_batch() -> None:
    fakes = Fakes()
    listening(fakes, "conn-gone", "acct-1")
    fakes.pusher.gone.add("conn-gone")
    logged = record_order_changes(life_of("acct-1", fakes), fakes.dependencies(), event_body)
    assert [e.sequence for e in logged] == [1, 2, 3]
    assert fakes.event_log.events["acct-1"] == logged
    assert fakes.connections.get("conn-gone") is None  # the publisher forgot it


def test_listeners_that_cannot_be_read_fail_the_batch_so_that_its_retry_pushes_what_it_logged() -> None:
    fakes = Fakes()
    changes = life_of("acct-1", fakes)
    fakes.connections = UnreadableStreamConnections()
    result = record_changes(changes, fakes.dependencies(), event_body)
    assert result.failed_from == 0
    assert [e.sequence for e in fakes.event_log.events["acct-1"]] == [1, 2, 3]
    # The retry, once the listeners can be read: nothing logged twice, everything pushed.
    fakes.connections = FakeStreamConnections()
    listening(fakes, "conn-1", "acct-1")
    again = record_changes(changes, fakes.dependencies(), event_body)
    assert again.failed_from is None
    assert [e.sequence for e in fakes.event_log.events["acct-1"]] == [1, 2, 3]
    assert len(fakes.pusher.messages_to("conn-1")) == 3


def test_an_unreachable_log_fails_the_batch_and_pushes_nothing() -> None:
    fakes = Fakes()
    listening(fakes, "conn-1", "acct-1")
    fakes.event_log.fail_with = StorageUnavailable("down")
    with pytest.raises(StorageUnavailable):
        record_order_changes(life_of("acct-1", fakes), fakes.dependencies(), event_body)
    assert fakes.pusher.sent == []


def test_a_change_whose_events_cannot_be_rendered_is_set_aside_and_the_others_are_logged() -> None:
    fakes = Fakes()
    mine, theirs = life_of("acct-1", fakes), life_of("acct-2", fakes)

    def render(event: OrderEvent) -> dict[str, Any]:
        if event.order.account_id == "acct-1" and event.type is OrderEventType.PLACED:
            raise ValueError("no JSON for this one")
        return event_body(event)

    result = record_changes([*mine, *theirs], fakes.dependencies(), render)
    assert result.unrecordable == {1: "ValueError: no JSON for this one"}
    assert result.failed_from is None
    assert [(e.account_id, e.type) for e in result.logged] == [
        ("acct-1", "created"),
        ("acct-1", "fill"),
        ("acct-2", "created"),
        ("acct-2", "placed"),
        ("acct-2", "fill"),
    ]
    with pytest.raises(ValueError, match="order change #1 cannot be recorded"):
        record_order_changes(mine, fakes.dependencies(), render)


def test_a_storage_failure_stops_recording_at_its_run_and_what_came_before_is_logged_and_pushed() -> None:
    fakes = Fakes()
    listening(fakes, "conn-1", "acct-1")
    mine, theirs = life_of("acct-1", fakes), life_of("acct-2", fakes)
    fakes.event_log.down_for.add("acct-2")
    # acct-1's first two, acct-2's (down), then acct-1's fill: not logged before acct-2's changes are.
    result = record_changes([mine[0], mine[1], theirs[0], mine[2]], fakes.dependencies(), event_body)
    assert result.failed_from == 2
    assert [e.type for e in result.logged] == ["created", "placed"]
    assert [e.type for e in fakes.event_log.events["acct-1"]] == ["created", "placed"]
    assert [m["event"]["type"] for m in fakes.pusher.messages_to("conn-1")] == ["created", "placed"]


def test_every_account_is_logged_before_anything_is_pushed() -> None:
    # A slow push to one account's clients delays no other account's logging.
    event_log = FakeOrderEventLog()
    fakes = Fakes(event_log=event_log, pusher=LogWatchingPusher(event_log))
    listening(fakes, "conn-1", "acct-1")
    mine, theirs = life_of("acct-1", fakes), life_of("acct-2", fakes)
    record_changes([mine[0], theirs[0], mine[1], theirs[1]], fakes.dependencies(), event_body)
    assert isinstance(fakes.pusher, LogWatchingPusher)
    assert fakes.pusher.logged_at_send == [4, 4]
