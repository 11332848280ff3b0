"""The stream's listening connections, as "listener" items in the ORDER EVENTS table's account partitions.

Why there and not in the connections table: the publisher must see a listen that has started, at once and
for sure. A strongly consistent Query of the account's partition gives that; the connections table could
only be asked by account through a global secondary index, which is eventually consistent (a listen could
stay invisible for a while, and a live event logged meanwhile would reach the client neither by its
replay nor by the publisher). Layout (infra/resources.yaml, OrderEventsTable): pk `account_id`, sk `entry`
= "listener#<connection id>", with `connection_id`, `key_id`, `connected_at`, `replayed_through` and
`expires_at` (TTL: the connection's own expiry). The event log's reads never meet these items: they ask for
"event#..." and "head" entries only (order_events_table.py).

Used by DynamoDBStreamConnections (stream_connections_table.py), which keeps these items in step with the
connections' own items.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

from chalicelib.adapters.dynamodb import DynamoDBTable, table_meta
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.adapters.streaming import StreamConnection

LISTENER_PREFIX = "listener#"


class StreamListenerRecord(Model):
    class Meta:
        table_name = "order-events"  # replaced per table by stream_listener_record_class_for()

    account_id = UnicodeAttribute(hash_key=True)
    entry = UnicodeAttribute(range_key=True)
    connection_id = UnicodeAttribute()
    key_id = UnicodeAttribute()
    connected_at = UTCDateTimeAttribute()
    replayed_through = NumberAttribute()
    expires_at = TTLAttribute()


def stream_listener_record_class_for(table_name: str, **connection: Any) -> type[StreamListenerRecord]:
    """A StreamListenerRecord bound to the order events table (connection: see table_meta)."""
    return type("BoundStreamListenerRecord", (StreamListenerRecord,), {"Meta": table_meta(table_name, **connection)})


def listener_entry(connection_id: str) -> str:
    return LISTENER_PREFIX + connection_id


class DynamoDBStreamListeners(DynamoDBTable[StreamListenerRecord]):
    """The listener items: put when a connection starts listening, read by the publisher, deleted with it."""

    def put(self, connection: StreamConnection, expires_at: datetime) -> None:
        record = self._records(
            connection.account_id,
            listener_entry(connection.connection_id),
            connection_id=connection.connection_id,
            key_id=connection.key_id,
            connected_at=connection.connected_at,
            replayed_through=connection.replayed_through,
            expires_at=expires_at,
        )
        try:
            record.save()
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not mark connection {connection.connection_id} listening") from exc

    def of_account(self, account_id: str, now: datetime | None = None) -> list[StreamConnection]:
        """The account's listeners, strongly consistent: a listener put before this call is in it."""
        now = now or datetime.now(UTC)
        records = self._records
        try:
            found = list(records.query(account_id, records.entry.startswith(LISTENER_PREFIX), consistent_read=True))
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not list the listening connections of account {account_id}") from exc
        # TTL deletes lag (by up to days): an expired item is a connection API Gateway has closed already.
        return [
            StreamConnection(
                connection_id=record.connection_id,
                account_id=record.account_id,
                key_id=record.key_id,
                connected_at=record.connected_at,
                listening=True,
                replayed_through=int(record.replayed_through),
            )
            for record in found
            if record.expires_at > now
        ]

    def delete(self, account_id: str, connection_id: str) -> None:
        """Forget the listener (no error if there is none)."""
        try:
            self._records(account_id, listener_entry(connection_id)).delete()
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not remove the listener of connection {connection_id}") from exc
