"""The orders table's stream handler in process through chalice.test with fakes: records to events, and failures."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.adapters.orders_table import OrderRecord, _to_record
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.adapters.streaming import StreamConnection
from chalicelib.domain.model import Order
from tests.unit.fakes import Fakes
from tests.unit.fakes_streaming import FakeOrderEventLog, LogWatchingPusher
from tests.unit.helpers import T0, limit_terms
from tests.unit.in_process import app_client

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:No application metrics to publish")]
STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-23T00:00:00.000"


def image(order: Order) -> dict[str, Any]:
    """The order as a NEW_AND_OLD_IMAGES stream record shows it (DynamoDB JSON), as the table stores it."""
    serialized: dict[str, Any] = _to_record(OrderRecord, order, T0 + timedelta(minutes=1)).serialize()
    return serialized


def stream_record(n: int, name: str, before: Order | None, after: Order | None) -> dict[str, Any]:
    some = after or before
    assert some is not None
    images: dict[str, Any] = {"Keys": {"id": {"S": some.id}}}
    if before is not None:
        images["OldImage"] = image(before)
    if after is not None:
        images["NewImage"] = image(after)
    images.update({"SequenceNumber": f"{n:021d}", "SizeBytes": 100, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    return {
        "eventID": f"event-{n}",
        "eventName": name,
        "eventSource": "aws:dynamodb",
        "eventSourceARN": STREAM_ARN,
        "awsRegion": "us-east-1",
        "dynamodb": images,
    }


def stored(order: Order, seconds: int) -> Order:
    return dataclasses.replace(order, version=order.version + 1, updated_at=T0 + timedelta(seconds=seconds))


def two_changes(account_id: str, first: int) -> tuple[list[dict[str, Any]], Order]:
    """An order's INSERT and its placement's MODIFY, numbered from `first`."""
    created = stored(Order.create(account_id, limit_terms(), T0), 0)
    placed = stored(created.placed("X1", T0), 1)
    return [
        stream_record(first, "INSERT", None, created),
        stream_record(first + 1, "MODIFY", created, placed),
    ], placed


def invoke(fakes: Fakes, records: list[dict[str, Any]]) -> dict[str, Any]:
    with app_client(fakes) as client:
        payload: dict[str, Any] = client.lambda_.invoke("publish_order_events", {"Records": records}).payload
    return payload


def test_inserts_and_modifies_become_the_accounts_events_in_record_order() -> None:
    fakes = Fakes()
    mine, order = two_changes("acct-1", 1)
    theirs, _ = two_changes("acct-2", 3)
    removed = stream_record(5, "REMOVE", order, None)
    response = invoke(fakes, [mine[0], theirs[0], mine[1], removed, theirs[1]])
    assert response == {"batchItemFailures": []}
    logged = fakes.event_log.events["acct-1"]
    assert [(e.sequence, e.type, e.order_id) for e in logged] == [(1, "created", order.id), (2, "placed", order.id)]
    assert logged[1].body["order"]["status"] == "placed"
    assert logged[1].body["time"] == "2026-11-23T12:00:01.000Z"
    assert [e.type for e in fakes.event_log.events["acct-2"]] == ["created", "placed"]


def test_a_batch_processed_again_logs_nothing_twice() -> None:
    fakes = Fakes()
    records, _ = two_changes("acct-1", 1)
    invoke(fakes, records)
    assert invoke(fakes, records) == {"batchItemFailures": []}
    assert [e.sequence for e in fakes.event_log.events["acct-1"]] == [1, 2]


def test_when_logging_fails_that_record_and_every_later_one_come_back() -> None:
    fakes = Fakes()
    mine, _ = two_changes("acct-1", 1)
    theirs, _ = two_changes("acct-2", 3)
    fakes.event_log.fail_with = StorageUnavailable("down")
    response = invoke(fakes, [*mine, *theirs])
    assert response == {"batchItemFailures": [{"itemIdentifier": f"{n:021d}"} for n in (1, 2, 3, 4)]}


def test_an_unreadable_record_is_set_aside_with_its_reason_and_the_others_are_logged() -> None:
    fakes = Fakes()
    mine, placed = two_changes("acct-1", 1)
    theirs, _ = two_changes("acct-2", 5)
    broken = stream_record(3, "MODIFY", placed, placed)
    broken["dynamodb"]["NewImage"] = {"id": {"S": "x"}}  # no account, no terms: not an order
    garbled = stream_record(4, "MODIFY", placed, placed)
    garbled["dynamodb"]["NewImage"] = "not an image"  # not even a mapping: no retry will read it either
    response = invoke(fakes, [*mine, broken, garbled, *theirs])
    # Never retried: done, so it blocks nothing behind it on its shard.
    assert response == {"batchItemFailures": []}
    assert [e.type for e in fakes.event_log.events["acct-1"]] == ["created", "placed"]
    assert [e.type for e in fakes.event_log.events["acct-2"]] == ["created", "placed"]
    set_aside = [json.loads(body) for body in fakes.order_events_failed.sent]
    assert [(m["sequenceNumber"], m["eventName"], m["keys"]) for m in set_aside] == [
        (f"{n:021d}", "MODIFY", {"id": {"S": placed.id}}) for n in (3, 4)
    ]
    assert set_aside[0]["reason"].startswith("unreadable record: ")
    assert set_aside[0]["eventSourceARN"] == STREAM_ARN
    assert fakes.failed_queue.sent == []  # the executions' queue is another's


def test_a_storage_failure_returns_its_record_and_every_later_one_and_sets_nothing_after_it_aside() -> None:
    fakes = Fakes()
    mine, placed = two_changes("acct-1", 1)
    theirs, _ = two_changes("acct-2", 3)
    broken = stream_record(5, "MODIFY", placed, placed)
    broken["dynamodb"]["NewImage"] = {"id": {"S": "x"}}
    fakes.event_log.down_for.add("acct-2")
    response = invoke(fakes, [*mine, *theirs, broken])
    # Retried until the stream's records expire (infra/event_sources.json): never handed to the
    # on-failure queue as a pointer into a stream that keeps them a day.
    assert response == {"batchItemFailures": [{"itemIdentifier": f"{n:021d}"} for n in (3, 4, 5)]}
    assert [e.type for e in fakes.event_log.events["acct-1"]] == ["created", "placed"]
    # The poison record comes back with the others, to be set aside (once) when they are logged.
    assert fakes.order_events_failed.sent == []


def test_a_poison_record_that_cannot_be_set_aside_comes_back_with_every_later_one() -> None:
    fakes = Fakes()
    mine, placed = two_changes("acct-1", 1)
    theirs, _ = two_changes("acct-2", 4)
    broken = stream_record(3, "MODIFY", placed, placed)
    broken["dynamodb"]["NewImage"] = {"id": {"S": "x"}}
    fakes.order_events_failed.down = True
    response = invoke(fakes, [*mine, broken, *theirs])
    assert response == {"batchItemFailures": [{"itemIdentifier": f"{n:021d}"} for n in (3, 4, 5)]}


def test_the_whole_batch_is_logged_before_anything_is_pushed() -> None:
    # A slow push to one account's clients delays no other account's logging (nor times the batch out).
    event_log = FakeOrderEventLog()
    fakes = Fakes(event_log=event_log, pusher=LogWatchingPusher(event_log))
    fakes.connections.add(StreamConnection("conn-1", "acct-1", "key-1", T0), T0 + timedelta(hours=2))
    fakes.connections.start_listening("conn-1", 0)
    mine, _ = two_changes("acct-1", 1)
    theirs, _ = two_changes("acct-2", 3)
    assert invoke(fakes, [mine[0], theirs[0], mine[1], theirs[1]]) == {"batchItemFailures": []}
    assert isinstance(fakes.pusher, LogWatchingPusher)
    assert fakes.pusher.logged_at_send == [4, 4]
