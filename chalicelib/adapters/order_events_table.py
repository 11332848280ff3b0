"""The order event log (OrderEventLog) in DynamoDB: one partition per account, its events numbered 1, 2, 3...

Items of an account (infra/resources.yaml OrderEventsTable): "head" holds the
last sequence number; "event#<event id>" one event each; "change#<change key>"
marks an order change's event as logged, with the sequence it got. An append
is one TransactWriteItems per chunk: the head moves from N to N + k on the
condition that it is still N, events N+1..N+k are put, and each change mark is
put on the condition that it does not exist yet. So an event number is taken
only together with every lower one (a transaction on a stale head fails as a
whole and is retried on the new head): the log has no gaps, and a change seen
twice (a stream record retried) is logged once. The gaps a reader can see are
an event whose transaction it sees half committed, and one TTL deleted: page()
tells them apart by age (visible_run).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

from chalicelib.adapters.dynamodb import DynamoDBTable, table_meta
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.adapters.streaming import START_POSITION, LoggedEvent, NewLogEntry, event_id_of
from chalicelib.clock import Clock, utc_now

HEAD_ENTRY = "head"
EVENT_PREFIX = "event#"
CHANGE_PREFIX = "change#"
# Sorts after every event id (digits): the upper bound of a Query over the events.
EVENTS_END = EVENT_PREFIX + "~"
# DynamoDB's limit of items in one transaction: the head and two items (event, change mark) per entry.
MAX_TRANSACTION_ITEMS = 100
# Well below that limit: a transaction's time grows with its items, and one that outlasts the
# client's read timeout (3 s) fails the batch, whose retry sends the same transaction again. A full
# one (49 entries) took longer than that on a loaded emulator, so a batch of 100 records made no
# progress for minutes (bench/order_stream.py); chunks of 16 commit one by one, so a retry finds the
# ones before logged (their change marks) and goes on. One head write per 16 events is cheap.
ENTRIES_PER_TRANSACTION = 16
# Appends that lost the race for the head to another writer of the same account (the stream's
# shards run in parallel) try again on the new head: this many times, then the batch is retried.
HEAD_RACE_ATTEMPTS = 10
HEAD_RACE_BACKOFF_S = 0.02
HEAD_RACE_BACKOFF_MAX_S = 0.5
_LAST_SEQUENCE = 10**20 - 1  # the highest a 20-digit event id can name


class OrderEventRecord(Model):
    class Meta:
        table_name = "order-events"  # replaced per table by order_event_record_class_for()

    account_id = UnicodeAttribute(hash_key=True)
    entry = UnicodeAttribute(range_key=True)
    sequence = NumberAttribute()
    order_id = UnicodeAttribute(null=True)
    type = UnicodeAttribute(null=True)
    body = UnicodeAttribute(null=True)  # the event's client JSON without its id, as text
    expires_at = TTLAttribute(null=True)  # events and change marks only: the head never expires


def order_event_record_class_for(table_name: str, **connection: Any) -> type[OrderEventRecord]:
    """An OrderEventRecord bound to one table (connection: see table_meta)."""
    return type("BoundOrderEventRecord", (OrderEventRecord,), {"Meta": table_meta(table_name, **connection)})


@dataclass(frozen=True)
class _Cancelled:
    """Why a transaction was cancelled: the change marks found logged, and whether the head had moved."""

    logged_keys: list[str]
    head_moved: bool


class DynamoDBOrderEventLog(DynamoDBTable[OrderEventRecord]):
    """OrderEventLog on one DynamoDB table (see the module's docstring for the items)."""

    def __init__(
        self,
        record_class: type[OrderEventRecord],
        retention: timedelta,
        clock: Clock = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(record_class)
        self._retention = retention
        self._clock = clock
        self._sleep = sleep

    def append(self, account_id: str, entries: Sequence[NewLogEntry]) -> list[LoggedEvent]:
        logged: dict[str, LoggedEvent] = {}
        unique: list[NewLogEntry] = []
        for entry in entries:
            # One transaction may not write one item twice: a change key given twice is logged once.
            if all(entry.change_key != other.change_key for other in unique):
                unique.append(entry)
        head: int | None = None
        for start in range(0, len(unique), ENTRIES_PER_TRANSACTION):
            head = self._append_chunk(account_id, unique[start : start + ENTRIES_PER_TRANSACTION], head, logged)
        return [logged[entry.change_key] for entry in entries]

    def page(self, account_id: str, after: int, limit: int) -> list[LoggedEvent]:
        if after >= _LAST_SEQUENCE or limit < 1:
            return []
        records = self._records
        try:
            found = list(
                records.query(
                    account_id,
                    records.entry.between(EVENT_PREFIX + event_id_of(after + 1), EVENTS_END),
                    consistent_read=True,
                    limit=limit,
                )
            )
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not read the events of account {account_id}") from exc
        visible = visible_run(
            after, [int(record.sequence) for record in found], lambda sequence: self._stored(account_id, sequence)
        )
        return [_logged(account_id, record) for record in found[:visible]]

    def _stored(self, account_id: str, sequence: int) -> bool:
        """Whether the event is stored now (a strongly consistent read sees every committed transaction whole)."""
        try:
            self._records.get(account_id, EVENT_PREFIX + event_id_of(sequence), consistent_read=True)
        except self._records.DoesNotExist:
            return False
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not read the events of account {account_id}") from exc
        return True

    def head(self, account_id: str) -> int:
        try:
            return int(self._records.get(account_id, HEAD_ENTRY, consistent_read=True).sequence)
        except self._records.DoesNotExist:
            return START_POSITION
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not read the event log head of account {account_id}") from exc

    def _append_chunk(
        self, account_id: str, chunk: list[NewLogEntry], head: int | None, logged: dict[str, LoggedEvent]
    ) -> int:
        """Log the chunk's entries not logged before in one transaction; the head after it."""
        waiting = chunk
        races = 0
        while True:
            if head is None:
                head = self.head(account_id)
            if not waiting:
                return head
            cancelled = self._transact(account_id, head, waiting)
            if cancelled is None:
                for offset, entry in enumerate(waiting, start=1):
                    logged[entry.change_key] = LoggedEvent(
                        account_id, head + offset, entry.order_id, entry.type, dict(entry.body)
                    )
                return head + len(waiting)
            if cancelled.logged_keys:
                earlier = [entry for entry in waiting if entry.change_key in cancelled.logged_keys]
                logged.update(self._logged_before(account_id, earlier))
                waiting = [entry for entry in waiting if entry.change_key not in logged]
            if cancelled.head_moved:
                races += 1
                if races >= HEAD_RACE_ATTEMPTS:
                    raise StorageUnavailable(f"the event log of account {account_id} kept changing under an append")
                # Jitter: two writers that collided do not collide again in step.
                self._sleep(random.uniform(0, min(HEAD_RACE_BACKOFF_MAX_S, HEAD_RACE_BACKOFF_S * 2**races)))
                head = None

    def _transact(self, account_id: str, head: int, entries: list[NewLogEntry]) -> _Cancelled | None:
        """One TransactWriteItems: head -> head + len(entries), the events and their change marks."""
        table = self._records.Meta.table_name
        expires_at = {"N": str(int((self._clock() + self._retention).timestamp()))}
        account = {"S": account_id}
        head_update: dict[str, Any] = {
            "TableName": table,
            "Key": {"account_id": account, "entry": {"S": HEAD_ENTRY}},
            "UpdateExpression": "SET #sequence = :new",
            "ExpressionAttributeNames": {"#sequence": "sequence"},
            "ExpressionAttributeValues": {":new": {"N": str(head + len(entries))}},
        }
        if head == START_POSITION:
            head_update["ConditionExpression"] = "attribute_not_exists(#sequence)"
        else:
            head_update["ConditionExpression"] = "#sequence = :old"
            head_update["ExpressionAttributeValues"][":old"] = {"N": str(head)}
        items: list[dict[str, Any]] = [{"Update": head_update}]
        for offset, entry in enumerate(entries, start=1):
            sequence = {"N": str(head + offset)}
            event = {
                "account_id": account,
                "entry": {"S": EVENT_PREFIX + event_id_of(head + offset)},
                "sequence": sequence,
                "order_id": {"S": entry.order_id},
                "type": {"S": entry.type},
                "body": {"S": json.dumps(entry.body, separators=(",", ":"))},
                "expires_at": expires_at,
            }
            mark = {
                "account_id": account,
                "entry": {"S": CHANGE_PREFIX + entry.change_key},
                "sequence": sequence,
                "expires_at": expires_at,
            }
            for item in (event, mark):
                items.append(
                    {"Put": {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(entry)"}}
                )
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise StorageUnavailable(f"could not append to the event log of account {account_id}") from exc
            return _cancellation(exc.response, entries)
        except BotoCoreError as exc:
            raise StorageUnavailable(f"could not append to the event log of account {account_id}") from exc
        return None

    def _logged_before(self, account_id: str, entries: list[NewLogEntry]) -> dict[str, LoggedEvent]:
        """The entries whose change an earlier append logged, as it logged them."""
        records = self._records
        found: dict[str, LoggedEvent] = {}
        try:
            for entry in entries:
                sequence = int(records.get(account_id, CHANGE_PREFIX + entry.change_key, consistent_read=True).sequence)
                try:
                    event = _logged(account_id, records.get(account_id, EVENT_PREFIX + event_id_of(sequence)))
                except records.DoesNotExist:
                    # Expired already (a change seen again days later): the entry says the same.
                    event = LoggedEvent(account_id, sequence, entry.order_id, entry.type, dict(entry.body))
                found[entry.change_key] = event
        except PynamoDBException as exc:  # DoesNotExist of a mark included: marks are never deleted early
            raise StorageUnavailable(f"could not read the logged events of account {account_id}") from exc
        return found


def visible_run(after: int, found: Sequence[int], stored: Callable[[int], bool]) -> int:
    """How many of the events a page found (their sequence numbers, ascending from after + 1) it may return.

    A missing sequence number (a gap: before the first found, or between two)
    is either an event of a transaction that a Query sees half committed (read
    committed per item: it can see N+2 before N+1), which the next page will
    get, or an event TTL deleted (in any order), which nobody will get again.
    Transactions commit in sequence order (each moves the head from where the
    last one left it), so only the found event's own transaction can be half
    visible: its events lie within ENTRIES_PER_TRANSACTION - 1 below it, and
    having seen it, a strongly consistent read of them sees them if they exist.
    Any of those stored: stop before the gap (the next page returns it). None:
    they expired, and so did every event below them; go on.
    """
    previous = after
    for index, sequence in enumerate(found):
        if sequence != previous + 1:
            lowest = max(previous + 1, sequence - ENTRIES_PER_TRANSACTION + 1)
            if any(stored(missing) for missing in range(sequence - 1, lowest - 1, -1)):
                return index
        previous = sequence
    return len(found)


def _cancellation(response: dict[str, Any], entries: list[NewLogEntry]) -> _Cancelled:
    """Which conditions failed, from the reasons in item order: head, then (event, mark) per entry."""
    codes = [reason.get("Code") for reason in response.get("CancellationReasons", [])]
    if len(codes) != 1 + 2 * len(entries):
        # No reasons to go by (a throttled or conflicting transaction): read the head again and retry.
        return _Cancelled([], head_moved=True)
    failed = [code == "ConditionalCheckFailed" for code in codes]
    logged_keys = [entry.change_key for index, entry in enumerate(entries) if failed[2 + 2 * index]]
    other = [code not in (None, "None", "ConditionalCheckFailed") for code in codes]
    events_taken = any(failed[1 + 2 * index] for index in range(len(entries)))
    head_moved = failed[0] or events_taken or any(other) or not logged_keys
    return _Cancelled(logged_keys, head_moved=head_moved)


def _logged(account_id: str, record: OrderEventRecord) -> LoggedEvent:
    return LoggedEvent(
        account_id=account_id,
        sequence=int(record.sequence),
        order_id=str(record.order_id),
        type=str(record.type),
        body=json.loads(str(record.body)),
    )
