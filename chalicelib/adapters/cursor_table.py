"""A scheduled function's position between runs, as one item of the checkpoints table.

The feed bridge keeps its place in the exchange's feed in that table (one
item per feed); the reconciler keeps its place in the book of orders beside
it, under a key of its own. Nothing else reads these items.
"""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

from chalicelib.adapters.dynamodb import DynamoDBTable, table_meta
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.clock import Clock, utc_now

# The reconciler's key: the bridge's keys are feed ids, which never contain a colon.
RECONCILER_CURSOR_KEY = "reconciler:orders"


class CursorRecord(Model):
    class Meta:
        table_name = "feed-checkpoints"  # replaced per table by cursor_record_class_for()

    feed_id = UnicodeAttribute(hash_key=True)
    position = UnicodeAttribute()
    updated_at = UTCDateTimeAttribute()


def cursor_record_class_for(table_name: str, **connection: Any) -> type[CursorRecord]:
    """A CursorRecord bound to one table (connection: see table_meta)."""
    return type("BoundCursorRecord", (CursorRecord,), {"Meta": table_meta(table_name, **connection)})


class DynamoDBCursorStore(DynamoDBTable[CursorRecord]):
    """CursorStore: one item, read consistently and overwritten (one writer: runs of one schedule do not overlap
    for long, and a lost or repeated position only costs a few orders checked again)."""

    def __init__(self, record_class: type[CursorRecord], key: str = RECONCILER_CURSOR_KEY, clock: Clock = utc_now):
        super().__init__(record_class)
        self._key = key
        self._clock = clock

    def load(self) -> str | None:
        try:
            return str(self._records.get(self._key, consistent_read=True).position)
        except self._records.DoesNotExist:
            return None
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not read the position {self._key}") from exc

    def save(self, position: str) -> None:
        try:
            self._records(self._key, position=position, updated_at=self._clock()).save()
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not save the position {self._key}") from exc
