"""The stream's connections and connect tokens on the StreamConnectionsTable of infra/resources.yaml, and the
listening connections' listener items in the OrderEventsTable, against a real emulator over HTTP: the items as
stored, listeners kept in step with their connections, and a token redeemed once however many connects race for
it."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from chalicelib.adapters.order_events_table import DynamoDBOrderEventLog, order_event_record_class_for
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.adapters.stream_connections_table import (
    DynamoDBStreamConnections,
    DynamoDBStreamTokens,
    StreamConnectionRecord,
    stream_connection_record_class_for,
)
from chalicelib.adapters.stream_listeners_table import (
    DynamoDBStreamListeners,
    StreamListenerRecord,
    stream_listener_record_class_for,
)
from chalicelib.adapters.streaming import START_POSITION, StreamConnection, StreamTokenGrant
from devstack.processes import free_port

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)
LIFETIME = timedelta(hours=2)


@pytest.fixture
def records(adapter_stack: dict[str, str]) -> type[StreamConnectionRecord]:
    return stream_connection_record_class_for(adapter_stack["StreamConnectionsTableName"])


@pytest.fixture
def listener_records(adapter_stack: dict[str, str]) -> type[StreamListenerRecord]:
    return stream_listener_record_class_for(adapter_stack["OrderEventsTableName"])


@pytest.fixture
def connections(
    records: type[StreamConnectionRecord], listener_records: type[StreamListenerRecord]
) -> DynamoDBStreamConnections:
    return DynamoDBStreamConnections(records, listener_records)


@pytest.fixture
def events_table(adapter_stack: dict[str, str], aws_endpoint: str) -> Any:
    return boto3.resource("dynamodb", endpoint_url=aws_endpoint).Table(adapter_stack["OrderEventsTableName"])


def listener_item(events_table: Any, connection: StreamConnection) -> dict[str, Any] | None:
    key = {"account_id": connection.account_id, "entry": "listener#" + connection.connection_id}
    item: dict[str, Any] | None = events_table.get_item(Key=key, ConsistentRead=True).get("Item")
    return item


@pytest.fixture
def tokens(records: type[StreamConnectionRecord]) -> DynamoDBStreamTokens:
    return DynamoDBStreamTokens(records)


@pytest.fixture
def raw_table(adapter_stack: dict[str, str], aws_endpoint: str) -> Any:
    return boto3.resource("dynamodb", endpoint_url=aws_endpoint).Table(adapter_stack["StreamConnectionsTableName"])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_connection(account_id: str, key_id: str = "abcdefghijkl") -> StreamConnection:
    return StreamConnection(unique("conn") + "=", account_id, key_id, T0)


def test_a_connection_round_trips_with_its_expiry_as_the_ttl_number(
    connections: DynamoDBStreamConnections, raw_table: Any
) -> None:
    connection = new_connection(unique("acme"))
    connections.add(connection, expires_at=T0 + LIFETIME)
    assert connections.get(connection.connection_id) == connection
    item = raw_table.get_item(Key={"connection_id": connection.connection_id}, ConsistentRead=True)["Item"]
    assert item["account_id"] == connection.account_id and item["key_id"] == connection.key_id
    assert int(item["expires_at"]) == int((T0 + LIFETIME).timestamp())  # epoch seconds, as DynamoDB's TTL reads it
    assert connections.get(unique("unknown")) is None


def test_start_listening_marks_the_connection_and_a_gone_one_stays_gone(
    connections: DynamoDBStreamConnections, raw_table: Any
) -> None:
    connection = new_connection(unique("acme"))
    connections.add(connection, expires_at=T0 + LIFETIME)
    marked = connections.start_listening(connection.connection_id, replayed_through=42)
    assert marked == StreamConnection(
        connection.connection_id, connection.account_id, connection.key_id, T0, listening=True, replayed_through=42
    )
    assert connections.get(connection.connection_id) == marked
    connections.remove(connection.connection_id)
    connections.remove(connection.connection_id)  # no error the second time
    assert connections.start_listening(connection.connection_id, replayed_through=43) is None
    assert "Item" not in raw_table.get_item(Key={"connection_id": connection.connection_id}, ConsistentRead=True)


def test_a_listening_connection_has_a_listener_item_in_its_accounts_event_partition_until_removed(
    connections: DynamoDBStreamConnections, events_table: Any, adapter_stack: dict[str, str]
) -> None:
    connection = new_connection(unique("acme"))
    connections.add(connection, expires_at=T0 + LIFETIME)
    assert listener_item(events_table, connection) is None
    connections.start_listening(connection.connection_id, replayed_through=42)
    item = listener_item(events_table, connection)
    assert item is not None
    assert (item["connection_id"], item["key_id"], int(item["replayed_through"])) == (
        connection.connection_id,
        connection.key_id,
        42,
    )
    assert int(item["expires_at"]) == int((T0 + LIFETIME).timestamp())  # goes with its connection
    # The event log of the account does not take it for an event or a head.
    log = DynamoDBOrderEventLog(
        order_event_record_class_for(adapter_stack["OrderEventsTableName"]), retention=timedelta(days=8)
    )
    assert (log.head(connection.account_id), log.page(connection.account_id, 0, 10)) == (START_POSITION, [])
    connections.remove(connection.connection_id)
    assert listener_item(events_table, connection) is None
    assert connections.listening_for(connection.account_id) == []


def test_the_publishers_read_of_the_listeners_is_one_strongly_consistent_query_of_the_account_partition(
    listener_records: type[StreamListenerRecord],
) -> None:
    # What makes a listen visible to the publisher at once: no index (eventually consistent) in between.
    listeners = DynamoDBStreamListeners(listener_records)
    connection = new_connection(unique("acme"))
    listeners.put(connection, expires_at=datetime.now(UTC) + LIFETIME)
    requests: list[tuple[str, dict[str, Any]]] = []

    def record(event_name: str, params: dict[str, Any], **_: Any) -> None:
        requests.append((event_name.rsplit(".", 1)[-1], params))

    listeners.client.meta.events.register("provide-client-params.dynamodb", record)
    try:
        found = listeners.of_account(connection.account_id)
    finally:
        listeners.client.meta.events.unregister("provide-client-params.dynamodb", record)
    assert [c.connection_id for c in found] == [connection.connection_id]
    assert [(operation, params.get("ConsistentRead"), "IndexName" in params) for operation, params in requests] == [
        ("Query", True, False)
    ]


def test_a_listen_started_after_its_connection_was_removed_leaves_no_listener(
    connections: DynamoDBStreamConnections, events_table: Any
) -> None:
    connection = new_connection(unique("acme"))
    assert connections.start_listening(connection.connection_id, replayed_through=1) is None  # never connected
    connections.add(connection, expires_at=T0 + LIFETIME)
    connections.remove(connection.connection_id)
    assert connections.start_listening(connection.connection_id, replayed_through=1) is None
    assert listener_item(events_table, connection) is None
    assert connections.listening_for(connection.account_id) == []


def test_a_listener_past_its_expiry_is_not_listed_though_ttl_has_not_deleted_it_yet(
    connections: DynamoDBStreamConnections, events_table: Any
) -> None:
    connection = new_connection(unique("acme"))
    connections.add(connection, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert connections.start_listening(connection.connection_id, replayed_through=0) is not None
    assert listener_item(events_table, connection) is not None
    assert connections.listening_for(connection.account_id) == []


def test_listening_for_lists_the_accounts_listening_connections_only(
    connections: DynamoDBStreamConnections, tokens: DynamoDBStreamTokens
) -> None:
    account, other = unique("acme"), unique("other")
    listening = [new_connection(account) for _ in range(3)]
    idle = new_connection(account)
    elsewhere = new_connection(other)
    for connection in [*listening, idle, elsewhere]:
        connections.add(connection, expires_at=datetime.now(UTC) + LIFETIME)  # listeners past it are not listed
    for n, connection in enumerate(listening):
        connections.start_listening(connection.connection_id, replayed_through=n)
    connections.start_listening(elsewhere.connection_id, replayed_through=0)
    tokens.issue(StreamTokenGrant("abcdefghijkl", account), T0 + timedelta(minutes=5))
    found = sorted(connections.listening_for(account), key=lambda c: c.replayed_through)
    assert [c.connection_id for c in found] == [c.connection_id for c in listening]
    assert [c.replayed_through for c in found] == [0, 1, 2]
    assert all(c.listening and c.account_id == account for c in found)
    assert connections.listening_for(unique("nobody")) == []


def test_all_lists_every_connection_and_no_token(
    connections: DynamoDBStreamConnections, tokens: DynamoDBStreamTokens
) -> None:
    account = unique("acme")
    mine = [new_connection(account) for _ in range(2)]
    for connection in mine:
        connections.add(connection, expires_at=T0 + LIFETIME)
    tokens.issue(StreamTokenGrant("abcdefghijkl", account), T0 + timedelta(minutes=5))
    every = list(connections.all())
    assert {c.connection_id for c in mine} <= {c.connection_id for c in every}
    assert not any(c.connection_id.startswith("token#") for c in every)


def test_a_token_is_stored_as_its_hash_only_and_redeemed_once(
    tokens: DynamoDBStreamTokens, connections: DynamoDBStreamConnections, raw_table: Any
) -> None:
    grant = StreamTokenGrant("abcdefghijkl", unique("acme"))
    token = tokens.issue(grant, T0 + timedelta(minutes=5))
    assert len(token) >= 43
    item_key = "token#" + hashlib.sha256(token.encode()).hexdigest()
    item = raw_table.get_item(Key={"connection_id": item_key}, ConsistentRead=True)["Item"]
    assert "account_id" not in item  # never taken for a connection
    assert item["token_account_id"] == grant.account_id
    assert not any(token in str(value) for value in item.values())
    assert connections.get(item_key) is None  # a token is never taken for a connection
    assert tokens.redeem(token, T0) == grant
    assert tokens.redeem(token, T0) is None
    assert tokens.redeem("never-issued", T0) is None
    assert tokens.issue(grant, T0 + timedelta(minutes=5)) != token


def test_an_expired_token_is_refused_and_consumed(tokens: DynamoDBStreamTokens) -> None:
    grant = StreamTokenGrant("abcdefghijkl", unique("acme"))
    token = tokens.issue(grant, T0 + timedelta(minutes=5))
    assert tokens.redeem(token, T0 + timedelta(minutes=5)) is None
    assert tokens.redeem(token, T0) is None


def test_of_many_connects_racing_with_one_token_exactly_one_gets_it(tokens: DynamoDBStreamTokens) -> None:
    grant = StreamTokenGrant("abcdefghijkl", unique("acme"))
    for _ in range(3):
        token = tokens.issue(grant, T0 + timedelta(minutes=5))
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(tokens.redeem, [token] * 8, [T0] * 8))
        assert answers.count(grant) == 1
        assert answers.count(None) == 7


def test_an_unreachable_table_is_storage_unavailable(adapter_stack: dict[str, str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    records = stream_connection_record_class_for(
        adapter_stack["StreamConnectionsTableName"], host=dead, max_retry_attempts=0, connect_timeout_s=0.5
    )
    listener_records = stream_listener_record_class_for(
        adapter_stack["OrderEventsTableName"], host=dead, max_retry_attempts=0, connect_timeout_s=0.5
    )
    connections, tokens = DynamoDBStreamConnections(records, listener_records), DynamoDBStreamTokens(records)
    connection = new_connection("acme")
    calls: list[Callable[[], object]] = [
        lambda: connections.add(connection, T0 + LIFETIME),
        lambda: connections.get(connection.connection_id),
        lambda: connections.remove(connection.connection_id),
        lambda: connections.start_listening(connection.connection_id, 1),
        lambda: connections.listening_for("acme"),
        lambda: list(connections.all()),
        lambda: tokens.issue(StreamTokenGrant("abcdefghijkl", "acme"), T0),
        lambda: tokens.redeem("some-token", T0),
    ]
    for call in calls:
        with pytest.raises(StorageUnavailable):
            call()
