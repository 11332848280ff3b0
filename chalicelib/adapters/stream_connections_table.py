"""The WebSocket stream's open connections and its single-use connect tokens, in one DynamoDB table.

Layout (infra/resources.yaml, StreamConnectionsTable): hash key `connection_id`; a connection's item has
`account_id`, `key_id`, `connected_at`, `listening`, `replayed_through` and `expires_at` (TTL: API Gateway
closes a connection after 2 h, so an item whose $disconnect was lost goes away by itself). Which connections
of an account listen is NOT asked of this table (only an eventually consistent index could answer by
account): a listening connection also has a listener item in the order events table's account partition
(stream_listeners_table.py), which the publisher reads strongly consistent. A connect token is an item
`"token#<sha256 hex of the token>"` with `key_id`, `token_account_id` and `expires_at` and NO account_id:
only the hash is stored, so reading the table does not give anyone a usable token.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

from chalicelib.adapters.dynamodb import DynamoDBTable, is_condition_failure, table_meta
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.adapters.stream_listeners_table import DynamoDBStreamListeners, StreamListenerRecord
from chalicelib.adapters.streaming import START_POSITION, StreamConnection, StreamTokenGrant

TOKEN_PREFIX = "token#"  # noqa: S105 (a key prefix, not a secret)
# 32 random bytes: as hard to guess as an API key's secret.
TOKEN_BYTES = 32


class StreamConnectionRecord(Model):
    class Meta:
        table_name = "stream-connections"  # replaced per table by stream_connection_record_class_for()

    connection_id = UnicodeAttribute(hash_key=True)
    # Absent on token items.
    account_id = UnicodeAttribute(null=True)
    key_id = UnicodeAttribute()
    connected_at = UTCDateTimeAttribute(null=True)
    listening = BooleanAttribute(null=True)
    replayed_through = NumberAttribute(null=True)
    token_account_id = UnicodeAttribute(null=True)  # tokens only: the account of the key that asked
    expires_at = TTLAttribute(null=True)


def stream_connection_record_class_for(table_name: str, **connection: Any) -> type[StreamConnectionRecord]:
    """A StreamConnectionRecord bound to one table (connection: see table_meta)."""
    return type(
        "BoundStreamConnectionRecord", (StreamConnectionRecord,), {"Meta": table_meta(table_name, **connection)}
    )


def token_item_key(token: str) -> str:
    """The item a token is stored under: only its hash, never the token itself."""
    return TOKEN_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def _to_connection(record: StreamConnectionRecord) -> StreamConnection | None:
    if record.account_id is None or record.connected_at is None:
        return None  # a token item
    return StreamConnection(
        connection_id=record.connection_id,
        account_id=record.account_id,
        key_id=record.key_id,
        connected_at=record.connected_at,
        listening=bool(record.listening),
        replayed_through=int(record.replayed_through or START_POSITION),
    )


class DynamoDBStreamConnections(DynamoDBTable[StreamConnectionRecord]):
    """StreamConnections on the stream connections table (tokens share it: see DynamoDBStreamTokens), and the
    listening ones' listener items on the order events table (listener_record_class)."""

    def __init__(
        self, record_class: type[StreamConnectionRecord], listener_record_class: type[StreamListenerRecord]
    ) -> None:
        super().__init__(record_class)
        self._listeners = DynamoDBStreamListeners(listener_record_class)

    def add(self, connection: StreamConnection, expires_at: datetime) -> None:
        record = self._records(
            connection.connection_id,
            account_id=connection.account_id,
            key_id=connection.key_id,
            connected_at=connection.connected_at,
            listening=connection.listening,
            replayed_through=connection.replayed_through,
            expires_at=expires_at,
        )
        try:
            record.save()
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not store connection {connection.connection_id}") from exc

    def get(self, connection_id: str) -> StreamConnection | None:
        if connection_id.startswith(TOKEN_PREFIX):
            return None
        try:
            record = self._records.get(connection_id, consistent_read=True)
        except self._records.DoesNotExist:
            return None
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not read connection {connection_id}") from exc
        return _to_connection(record)

    def remove(self, connection_id: str) -> None:
        if connection_id.startswith(TOKEN_PREFIX):
            return
        # The connection's item first, then its listener: see start_listening for why this order. Its old
        # item (one DeleteItem returning it) names the account whose partition holds the listener.
        try:
            answer = self._records._get_connection().delete_item(connection_id, return_values="ALL_OLD")
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not remove connection {connection_id}") from exc
        item = answer.get("Attributes")
        if not item:
            return  # unknown, or removed already (with its listener, or the listener expires with it)
        account_id = self._records.from_raw_data(item).account_id
        if account_id is not None:
            self._listeners.delete(account_id, connection_id)

    def start_listening(self, connection_id: str, replayed_through: int) -> StreamConnection | None:
        if connection_id.startswith(TOKEN_PREFIX):
            return None
        records = self._records
        record = records(connection_id)
        # Conditional: a connection whose $disconnect came first is not brought back as a half item.
        try:
            record.update(
                actions=[records.listening.set(True), records.replayed_through.set(replayed_through)],
                condition=records.connection_id.exists() & records.account_id.exists(),
            )
        except PynamoDBException as exc:
            if is_condition_failure(exc):
                return None
            raise StorageUnavailable(f"could not mark connection {connection_id} listening") from exc
        connection = _to_connection(record)
        if connection is None or record.expires_at is None:
            return None
        self._listeners.put(connection, expires_at=record.expires_at)
        # A remove may have run between the update and the put: it deletes the connection's item before its
        # listener, so either it deletes our listener too, or the item is gone by now and we delete it here.
        if self.get(connection_id) is None:
            self._listeners.delete(connection.account_id, connection_id)
            return None
        return connection

    def listening_for(self, account_id: str) -> list[StreamConnection]:
        return self._listeners.of_account(account_id)

    def all(self) -> Iterator[StreamConnection]:
        try:
            for record in self._records.scan(filter_condition=self._records.account_id.exists()):
                connection = _to_connection(record)
                if connection is not None:
                    yield connection
        except PynamoDBException as exc:
            raise StorageUnavailable("could not list the stream connections") from exc


class DynamoDBStreamTokens(DynamoDBTable[StreamConnectionRecord]):
    """StreamTokens on the stream connections table: items "token#<sha256>", consumed by a conditional delete."""

    def issue(self, grant: StreamTokenGrant, expires_at: datetime) -> str:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        record = self._records(
            token_item_key(token), key_id=grant.key_id, token_account_id=grant.account_id, expires_at=expires_at
        )
        try:
            record.save(condition=self._records.connection_id.does_not_exist())
        except PynamoDBException as exc:
            raise StorageUnavailable("could not store a stream token") from exc
        return token

    def redeem(self, token: str, now: datetime) -> StreamTokenGrant | None:
        if not token:
            return None
        # One DeleteItem returning the old item: of any number of connects with the same token at once,
        # exactly one gets the item back. An expired token is deleted too (it is useless either way);
        # TTL deletion can lag by hours, hence the check of expires_at here.
        # Conditional as well: DynamoDB Local (LocalStack) handed the old item to two racing deletes.
        try:
            answer = self._records._get_connection().delete_item(
                token_item_key(token), condition=self._records.connection_id.exists(), return_values="ALL_OLD"
            )
        except PynamoDBException as exc:
            if is_condition_failure(exc):
                return None  # unknown, or used by another connect a moment ago
            raise StorageUnavailable("could not redeem a stream token") from exc
        item = answer.get("Attributes")
        if not item:
            return None
        record = self._records.from_raw_data(item)
        if record.account_id is not None or record.token_account_id is None or record.expires_at is None:
            return None  # not a token item (cannot happen with a token prefix, but never hand out a connection)
        if record.expires_at <= now:
            return None
        return StreamTokenGrant(key_id=record.key_id, account_id=record.token_account_id)
