"""The order event log against a real emulator over HTTP: numbering without gaps, idempotence, races, expiry."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from chalice.local import LambdaContext

from chalicelib import bootstrap
from chalicelib.adapters.order_events_table import DynamoDBOrderEventLog, order_event_record_class_for
from chalicelib.adapters.streaming import START_POSITION, LoggedEvent, NewLogEntry
from chalicelib.config import Settings
from chalicelib.domain.model import ExecType, ExecutionReport, Order, OrderTerms, OrderType, Side
from chalicelib.entrypoints import order_stream
from chalicelib.service.executions import apply_execution_reports
from devstack.emulator import emulator_client

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=8)
TERMS = OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", 10, Decimal("99.5"))


@pytest.fixture
def event_log(adapter_stack: dict[str, str]) -> DynamoDBOrderEventLog:
    settings = Settings()
    records = order_event_record_class_for(
        adapter_stack["OrderEventsTableName"], **bootstrap.dynamodb_connection(settings)
    )
    return DynamoDBOrderEventLog(records, retention=RETENTION, clock=lambda: NOW)


def account() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


def entries(prefix: str, count: int, start: int = 0) -> list[NewLogEntry]:
    return [
        NewLogEntry(
            change_key=f"{prefix}#{n}#0",
            order_id=prefix,
            type="placed",
            body={
                "type": "placed",
                "time": "2026-11-23T12:00:00.000Z",
                "order": {"id": prefix, "n": n},
                "execution": None,
            },
        )
        for n in range(start, start + count)
    ]


def read_all(event_log: DynamoDBOrderEventLog, account_id: str, page_size: int = 100) -> list[LoggedEvent]:
    found: list[LoggedEvent] = []
    after = START_POSITION
    while page := event_log.page(account_id, after, page_size):
        found.extend(page)
        after = page[-1].sequence
    return found


def test_an_append_numbers_its_events_from_one_without_gaps_across_transactions(
    event_log: DynamoDBOrderEventLog,
) -> None:
    account_id = account()
    assert event_log.head(account_id) == START_POSITION
    assert event_log.page(account_id, START_POSITION, 10) == []
    new = entries("order-a", 120)  # three transactions of at most 100 items
    logged = event_log.append(account_id, new)
    assert [event.sequence for event in logged] == list(range(1, 121))
    assert [event.body for event in logged] == [entry.body for entry in new]
    assert event_log.head(account_id) == 120
    assert read_all(event_log, account_id, page_size=50) == logged
    assert event_log.page(account_id, 118, 10) == logged[118:]
    assert event_log.page(account_id, 10, 3) == logged[10:13]
    assert logged[0].to_json() == {"id": "00000000000000000001", **new[0].body}
    assert event_log.page(account(), START_POSITION, 10) == []  # another account's log is its own


def test_entries_appended_again_are_logged_once_and_come_back_with_their_first_sequence(
    event_log: DynamoDBOrderEventLog,
) -> None:
    account_id = account()
    first = event_log.append(account_id, entries("order-a", 3))
    second = event_log.append(account_id, entries("order-b", 2))
    again = event_log.append(account_id, [*entries("order-a", 4), *entries("order-b", 2), *entries("order-a", 1)])
    assert again[:3] == first
    assert again[4:6] == second
    assert again[6] == first[0]  # the same change twice in one call: logged once
    assert again[3].sequence == 6  # only the new one took a number
    assert [event.sequence for event in read_all(event_log, account_id)] == [1, 2, 3, 4, 5, 6]
    assert event_log.head(account_id) == 6


def test_concurrent_appends_to_one_account_interleave_without_gaps_and_a_reader_never_skips(
    event_log: DynamoDBOrderEventLog,
) -> None:
    account_id = account()
    batches = 15
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[LoggedEvent] = []

    def write(prefix: str) -> None:
        try:
            for n in range(batches):
                event_log.append(account_id, entries(prefix, 3, start=3 * n))
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    def read() -> None:
        after = START_POSITION
        try:
            while True:
                finished = done.is_set()
                page = event_log.page(account_id, after, 7)
                seen.extend(page)
                after = page[-1].sequence if page else after
                if finished and not page:
                    return
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(prefix,)) for prefix in ("order-a", "order-b")]
    reader = threading.Thread(target=read)
    for thread in [*writers, reader]:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    done.set()
    reader.join(timeout=60)
    assert errors == []
    logged = read_all(event_log, account_id)
    total = 2 * batches * 3
    assert [event.sequence for event in logged] == list(range(1, total + 1))
    assert event_log.head(account_id) == total
    # Each writer's events in the order it appended them.
    for prefix in ("order-a", "order-b"):
        assert [e.body["order"]["n"] for e in logged if e.order_id == prefix] == list(range(batches * 3))
    # The reader, paging while they wrote, got every event once, in order: no cursor ever passed a gap.
    assert [event.sequence for event in seen] == list(range(1, total + 1))


def test_events_and_change_marks_expire_after_the_retention_and_the_head_never(
    event_log: DynamoDBOrderEventLog, adapter_stack: dict[str, str]
) -> None:
    account_id = account()
    event_log.append(account_id, entries("order-a", 1))
    table = adapter_stack["OrderEventsTableName"]

    def item(entry: str) -> dict[str, Any]:
        key = {"account_id": {"S": account_id}, "entry": {"S": entry}}
        found: dict[str, Any] = event_log.client.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
        return found

    expires_at = str(int((NOW + RETENTION).timestamp()))
    assert item("event#00000000000000000001")["expires_at"] == {"N": expires_at}
    assert item("change#order-a#0#0")["expires_at"] == {"N": expires_at}
    assert item("change#order-a#0#0")["sequence"] == {"N": "1"}
    head = item("head")
    assert head["sequence"] == {"N": "1"}
    assert "expires_at" not in head


def test_a_page_passes_events_ttl_deleted_in_any_order(
    event_log: DynamoDBOrderEventLog, adapter_stack: dict[str, str]
) -> None:
    account_id = account()
    logged = event_log.append(account_id, entries("order-a", 6))
    table = adapter_stack["OrderEventsTableName"]
    # 2 and 4 gone, as TTL deletes them (any of them, in any order): a consistent read finds neither,
    # so no transaction can still bring them; the pages pass them. (A gap whose event a consistent
    # read does find, a Query seeing a transaction half committed on AWS, is in the unit tests.)
    for sequence in (2, 4):
        key = {"account_id": {"S": account_id}, "entry": {"S": f"event#{sequence:020d}"}}
        event_log.client.delete_item(TableName=table, Key=key)
    assert event_log.page(account_id, 1, 10) == [logged[2], logged[4], logged[5]]
    assert event_log.page(account_id, START_POSITION, 10) == [logged[0], logged[2], logged[4], logged[5]]


def test_the_orders_tables_own_stream_records_become_the_orders_events(adapter_stack: dict[str, str]) -> None:
    # The production wiring on this stack's tables; the stream records are those the emulator's DynamoDB
    # Streams hands out for the orders table (new and old images), as Lambda would get them.
    settings = Settings(
        orders_table_name=adapter_stack["OrdersTableName"],
        executions_table_name=adapter_stack["ExecutionsTableName"],
        order_events_table_name=adapter_stack["OrderEventsTableName"],
        stream_connections_table_name=adapter_stack["StreamConnectionsTableName"],
    )
    dependencies = bootstrap.bootstrap(settings)
    account_id = account()
    created = dependencies.orders.add(Order.create(account_id, TERMS, NOW), NOW + timedelta(minutes=1))
    placed = dependencies.orders.update(created.placed("X1", NOW + timedelta(seconds=1)), None)
    fill = ExecutionReport(
        "E1", placed.id, "X1", ExecType.FILL, 10, Decimal("99.5"), 10, 0, Decimal("99.5"), NOW + timedelta(seconds=2), 1
    )
    apply_execution_reports([fill], dependencies)

    records = stream_records_of(adapter_stack["OrdersTableStreamArn"], placed.id, expected=3)
    response = order_stream.handle_batch(
        {"Records": records}, LambdaContext("publish_order_events", memory_size=512), dependencies=dependencies
    )
    assert response == {"batchItemFailures": []}
    logged = dependencies.stream.event_log.page(account_id, START_POSITION, 10)
    assert [event.type for event in logged] == ["created", "placed", "fill"]
    assert logged[1].body["order"]["placed_at"] == "2026-11-23T12:00:01.000Z"
    assert logged[2].body["execution"]["id"] == "E1"
    assert logged[2].body["order"]["status"] == "filled"
    # Lambda delivers a batch again after a timeout: nothing is logged twice.
    order_stream.handle_batch(
        {"Records": records}, LambdaContext("publish_order_events", memory_size=512), dependencies=dependencies
    )
    assert dependencies.stream.event_log.head(account_id) == 3


def stream_records_of(stream_arn: str, order_id: str, expected: int) -> list[dict[str, Any]]:
    """The order's records on the table's stream, oldest first, in the shape Lambda hands them over."""
    streams = emulator_client("dynamodbstreams", os.environ["AWS_ENDPOINT_URL"])
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(found) < expected and time.monotonic() < deadline:
        found = []
        for shard in streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]:
            iterator = streams.get_shard_iterator(
                StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                answer = streams.get_records(ShardIterator=iterator, Limit=1000)
                found.extend(r for r in answer["Records"] if r["dynamodb"]["Keys"]["id"]["S"] == order_id)
                iterator = answer.get("NextShardIterator") if answer["Records"] else None
    assert len(found) == expected, found
    # boto3 hands the sequence numbers over as text already; dates are what Lambda's JSON has as numbers.
    for record in found:
        record["dynamodb"].pop("ApproximateCreationDateTime", None)
    return found
