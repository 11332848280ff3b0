"""The orders table in DynamoDB through PynamoDB; records are mapped to domain orders here and nowhere else."""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta
from typing import Any

from pynamodb.attributes import (
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
    VersionAttribute,
)
from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib.adapters.dynamodb import (
    DynamoDBTable,
    decimal_or_none,
    is_condition_failure,
    table_meta,
    text_or_none,
)
from chalicelib.adapters.open_orders import bound_open_orders_index, count_open_orders, open_order_ids
from chalicelib.adapters.repository import (
    ConcurrentModification,
    OrderAlreadyExists,
    OrderCursor,
    OrderPage,
    OrderQuery,
    ReconcileCursor,
    StorageUnavailable,
)
from chalicelib.domain.model import (
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    Order,
    OrderStatus,
    OrderTerms,
    OrderType,
    Reopening,
    Side,
    TimeInForce,
)

RECONCILED_STATUSES = OPEN_STATUSES | {OrderStatus.FAILED}

# Pending orders are spread over this many index partitions so that the sparse
# index never concentrates every new order's write on one partition key
# (DynamoDB allows ~1,000 writes/s per key). The sweep queries each shard.
PENDING_INDEX_SHARDS = 8
PENDING_INDEX_NAME = "pending-sweep"
ACCOUNT_INDEX_NAME = "account-orders"
# The reconciler's orders (open, or failed and not yet dropped), spread over
# shards for the same reason as the sweep's, in id order within each.
RECONCILE_INDEX_SHARDS = 8
RECONCILE_INDEX_NAME = "reconcile-orders"
# Items read per Query request when listing (well under DynamoDB's 1 MB page).
LIST_PAGE_READ = 200
# Items one listing may read in all, matching or not (Settings.list_max_items_read says why).
LIST_MAX_ITEMS_READ = 1_000


class PendingSweepIndex(GlobalSecondaryIndex["OrderRecord"]):  # type: ignore[no-untyped-call]
    """Sparse: only pending orders carry its keys, so it holds just what the sweep looks at."""

    class Meta:
        index_name = PENDING_INDEX_NAME
        projection = KeysOnlyProjection()

    pending_shard = NumberAttribute(hash_key=True)
    sweep_after = UTCDateTimeAttribute(range_key=True)


class AccountOrdersIndex(GlobalSecondaryIndex["OrderRecord"]):  # type: ignore[no-untyped-call]
    """Every order by owner and creation time: GET /orders pages through it newest first."""

    class Meta:
        index_name = ACCOUNT_INDEX_NAME
        projection = AllProjection()

    account_id = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class ReconcileIndex(GlobalSecondaryIndex["OrderRecord"]):  # type: ignore[no-untyped-call]
    """Sparse: only the orders the reconciler compares with the exchange carry reconcile_shard."""

    class Meta:
        index_name = RECONCILE_INDEX_NAME
        projection = KeysOnlyProjection()

    reconcile_shard = NumberAttribute(hash_key=True)
    id = UnicodeAttribute(range_key=True)


class ReopeningRecord(MapAttribute[str, Any]):
    """One operator reopening (domain Reopening) inside an order's item."""

    at = UTCDateTimeAttribute()
    by = UnicodeAttribute()
    earlier_failure = UnicodeAttribute(null=True)


class OrderRecord(Model):
    class Meta:
        table_name = "orders"  # replaced per table by order_record_class_for()

    id = UnicodeAttribute(hash_key=True)
    account_id = UnicodeAttribute()
    type = UnicodeAttribute()
    side = UnicodeAttribute()
    instrument = UnicodeAttribute()
    quantity = NumberAttribute()
    # A string, not a number attribute: PynamoDB reads numbers back as floats,
    # and a price must come back exactly as the client sent it.
    limit_price = UnicodeAttribute(null=True)
    stop_price = UnicodeAttribute(null=True)  # a string for the same reason as limit_price
    # Absent on orders stored before time in force existed: they are day orders.
    time_in_force = UnicodeAttribute(null=True)
    expires_at = UTCDateTimeAttribute(null=True)
    client_order_id = UnicodeAttribute(null=True)
    status = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    attempts = NumberAttribute(default=0)
    placed_at = UTCDateTimeAttribute(null=True)
    exchange_order_id = UnicodeAttribute(null=True)
    failure_reason = UnicodeAttribute(null=True)
    last_error = UnicodeAttribute(null=True)
    filled_quantity = NumberAttribute(default=0)
    average_fill_price = UnicodeAttribute(null=True)  # a string for the same reason as limit_price
    correlation_id = UnicodeAttribute(null=True)
    placing_until = UTCDateTimeAttribute(null=True)
    placement_quiet_at = UTCDateTimeAttribute(null=True)
    cancel_queued_at = UTCDateTimeAttribute(null=True)
    cancel_sent_at = UTCDateTimeAttribute(null=True)
    reopenings = ListAttribute(of=ReopeningRecord, null=True)
    replaces = UnicodeAttribute(null=True)  # a replacement's original
    replaced_by = UnicodeAttribute(null=True)  # an original's replacement, pending or confirmed
    pending_shard = NumberAttribute(null=True)
    sweep_after = UTCDateTimeAttribute(null=True)
    reconcile_shard = NumberAttribute(null=True)
    open_account_id = UnicodeAttribute(null=True)  # while open: the sparse account-open-orders index's key
    version = VersionAttribute()

    pending_sweep = PendingSweepIndex()
    account_orders = AccountOrdersIndex()
    reconcile = ReconcileIndex()
    open_orders = bound_open_orders_index()


def order_record_class_for(table_name: str, **connection: Any) -> type[OrderRecord]:
    """An OrderRecord bound to one table (connection: see table_meta)."""
    meta = table_meta(table_name, **connection)
    index_meta = type("Meta", (), {"index_name": PENDING_INDEX_NAME, "projection": KeysOnlyProjection()})
    index_class = type("BoundPendingSweepIndex", (PendingSweepIndex,), {"Meta": index_meta})
    account_meta = type("Meta", (), {"index_name": ACCOUNT_INDEX_NAME, "projection": AllProjection()})
    account_class = type("BoundAccountOrdersIndex", (AccountOrdersIndex,), {"Meta": account_meta})
    reconcile_meta = type("Meta", (), {"index_name": RECONCILE_INDEX_NAME, "projection": KeysOnlyProjection()})
    reconcile_class = type("BoundReconcileIndex", (ReconcileIndex,), {"Meta": reconcile_meta})
    return type(
        "BoundOrderRecord",
        (OrderRecord,),
        {
            "Meta": meta,
            "pending_sweep": index_class(),
            "account_orders": account_class(),
            "reconcile": reconcile_class(),
            "open_orders": bound_open_orders_index(),
        },
    )


# What an update may change; the order's terms and creation time never change.
_MUTABLE_ATTRIBUTES = (
    "status",
    "updated_at",
    "attempts",
    "placed_at",
    "exchange_order_id",
    "failure_reason",
    "last_error",
    "filled_quantity",
    "average_fill_price",
    "placing_until",
    "placement_quiet_at",
    "cancel_queued_at",
    "cancel_sent_at",
    "reopenings",
    "replaced_by",
    "pending_shard",
    "sweep_after",
    "reconcile_shard",
    "open_account_id",
)


_SWEEP_INDEX_ATTRIBUTES = ("pending_shard", "sweep_after")


def _pending_shard(order_id: str) -> int:
    return zlib.crc32(order_id.encode()) % PENDING_INDEX_SHARDS


def _reconcile_shard(order_id: str) -> int:
    return zlib.crc32(order_id.encode()) % RECONCILE_INDEX_SHARDS


def _to_record(record_class: type[OrderRecord], order: Order, sweep_after: datetime | None) -> OrderRecord:
    terms = order.terms
    record = record_class(
        order.id,
        account_id=order.account_id,
        type=terms.type.value,
        side=terms.side.value,
        instrument=terms.instrument,
        quantity=terms.quantity,
        limit_price=text_or_none(terms.limit_price),
        stop_price=text_or_none(terms.stop_price),
        time_in_force=terms.time_in_force.value,
        expires_at=terms.expires_at,
        client_order_id=terms.client_order_id,
        status=order.status.value,
        created_at=order.created_at,
        updated_at=order.updated_at,
        attempts=order.attempts,
        placed_at=order.placed_at,
        exchange_order_id=order.exchange_order_id,
        failure_reason=order.failure_reason,
        last_error=order.last_error,
        filled_quantity=order.filled_quantity,
        average_fill_price=text_or_none(order.average_fill_price),
        correlation_id=order.correlation_id,
        placing_until=order.placing_until,
        placement_quiet_at=order.placement_quiet_at,
        cancel_queued_at=order.cancel_queued_at,
        cancel_sent_at=order.cancel_sent_at,
        reopenings=[_reopening_record(reopening) for reopening in order.reopenings] or None,
        replaces=order.replaces,
        replaced_by=order.replaced_by,
    )
    # Orders our workers still owe a placement or a cancel request stay in
    # the sweep's index; every other order leaves it.
    if order.needs_work and sweep_after is not None:
        record.pending_shard = _pending_shard(order.id)
        record.sweep_after = sweep_after
    # Open and failed orders are the reconciler's (a failed one until it drops
    # it, see stop_reconciling); a done order leaves its index with this write.
    # Open orders are counted for the account's open-orders limit (adapters/open_orders.py);
    # the write that makes an order terminal takes it out of that index.
    if order.status not in TERMINAL_STATUSES:
        record.open_account_id = order.account_id
    if order.status in RECONCILED_STATUSES:
        record.reconcile_shard = _reconcile_shard(order.id)
    # PynamoDB's VersionAttribute turns save() into "write only if the stored
    # version is still this one", then increments it. None means never stored.
    if order.version:
        record.version = order.version
    return record


def _update_actions(
    records: type[OrderRecord], record: OrderRecord, order: Order, sweep_after: datetime | None
) -> list[Any]:
    """Set each mutable attribute to the record's value, removing unset ones (how an order leaves a sparse index)."""
    names: tuple[str, ...] = _MUTABLE_ATTRIBUTES
    if order.needs_work and sweep_after is None:
        # Still owed work and no new sweep time given (an execution report
        # on a pending_cancel order): keep its place in the sweep's index.
        names = tuple(name for name in names if name not in _SWEEP_INDEX_ATTRIBUTES)
    actions: list[Any] = []
    for name in names:
        attribute = getattr(records, name)
        value = getattr(record, name)
        actions.append(attribute.remove() if value is None else attribute.set(value))
    return actions


def _reopening_record(reopening: Reopening) -> ReopeningRecord:
    return ReopeningRecord(at=reopening.at, by=reopening.by, earlier_failure=reopening.earlier_failure)  # type: ignore[no-untyped-call]


def order_from_stream_image(record_class: type[OrderRecord], image: dict[str, Any]) -> Order:
    """The order a DynamoDB stream image (NewImage/OldImage, DynamoDB JSON) holds; ValueError if it is not one."""
    try:
        return _to_order(record_class.from_raw_data(image))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an order image: {exc}") from exc


def _to_order(record: OrderRecord) -> Order:
    return Order(
        id=record.id,
        account_id=record.account_id,
        terms=OrderTerms(
            type=OrderType(record.type),
            side=Side(record.side),
            instrument=record.instrument,
            quantity=int(record.quantity),
            limit_price=decimal_or_none(record.limit_price),
            client_order_id=record.client_order_id,
            time_in_force=TimeInForce(record.time_in_force or TimeInForce.DAY),
            expires_at=record.expires_at,
            stop_price=decimal_or_none(record.stop_price),
        ),
        status=OrderStatus(record.status),
        created_at=record.created_at,
        updated_at=record.updated_at,
        attempts=int(record.attempts or 0),
        placed_at=record.placed_at,
        exchange_order_id=record.exchange_order_id,
        failure_reason=record.failure_reason,
        last_error=record.last_error,
        filled_quantity=int(record.filled_quantity or 0),
        average_fill_price=decimal_or_none(record.average_fill_price),
        correlation_id=record.correlation_id,
        placing_until=record.placing_until,
        placement_quiet_at=record.placement_quiet_at,
        cancel_queued_at=record.cancel_queued_at,
        cancel_sent_at=record.cancel_sent_at,
        reopenings=tuple(Reopening(r.at, r.by, r.earlier_failure) for r in record.reopenings or ()),
        replaces=record.replaces,
        replaced_by=record.replaced_by,
        version=int(record.version or 0),
    )


class DynamoDBOrderRepository(DynamoDBTable[OrderRecord]):
    """OrderRepository on one DynamoDB table; see infra/resources.yaml for its keys and index."""

    def __init__(self, record_class: type[OrderRecord], list_max_items_read: int = LIST_MAX_ITEMS_READ) -> None:
        super().__init__(record_class)
        self._list_max_items_read = list_max_items_read

    def add(self, order: Order, sweep_after: datetime) -> Order:
        record = _to_record(self._records, order, sweep_after)
        try:
            record.save(condition=self._records.id.does_not_exist())
        except PynamoDBException as exc:
            if is_condition_failure(exc):
                raise OrderAlreadyExists(order.id) from exc
            raise StorageUnavailable(f"could not store order {order.id}") from exc
        return _to_order(record)

    def get(self, order_id: str) -> Order | None:
        try:
            record = self._records.get(order_id, consistent_read=True)
        except self._records.DoesNotExist:
            return None
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not read order {order_id}") from exc
        return _to_order(record)

    def add_replacement(self, replacement: Order, original: Order, sweep_after: datetime) -> tuple[Order, Order]:
        new_record = _to_record(self._records, replacement, sweep_after)
        original_record = _to_record(self._records, original, None)
        # The same connection (endpoint, timeouts, retries) as every other call on this table.
        connection = self._records._get_connection().connection
        try:
            with TransactWrite(connection=connection) as transaction:
                transaction.save(new_record, condition=self._records.id.does_not_exist())
                transaction.update(
                    original_record,
                    actions=_update_actions(self._records, original_record, original, None),
                    condition=self._records.id.exists(),
                )
        except TransactWriteError as exc:
            # One reason per item, in the order written: which condition failed says what happened.
            codes = [reason.code if reason else None for reason in exc.cancellation_reasons]
            if codes[:1] == ["ConditionalCheckFailed"]:
                raise OrderAlreadyExists(replacement.id) from exc
            if "ConditionalCheckFailed" in codes or "TransactionConflict" in codes:
                raise ConcurrentModification(original.id) from exc
            raise StorageUnavailable(f"could not store replacement {replacement.id}") from exc
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not store replacement {replacement.id}") from exc
        return _to_order(new_record), _to_order(original_record)

    def update(self, order: Order, sweep_after: datetime | None) -> Order:
        if order.version == 0:
            raise ValueError("update() needs an order read from storage; use add() for new orders")
        record = _to_record(self._records, order, sweep_after)
        try:
            # One UpdateItem, conditional on the version this copy was read at
            # (PynamoDB adds that condition and the increment).
            record.update(
                actions=_update_actions(self._records, record, order, sweep_after), condition=self._records.id.exists()
            )
        except PynamoDBException as exc:
            if is_condition_failure(exc):
                raise ConcurrentModification(order.id) from exc
            raise StorageUnavailable(f"could not update order {order.id}") from exc
        return _to_order(record)

    def count_open(self, account_id: str, stop_at: int) -> int:
        return count_open_orders(self._records, account_id, stop_at)

    def open_order_ids(self, account_id: str, after: str | None, limit: int) -> list[str]:
        return open_order_ids(self._records, account_id, after, limit)

    def get_many(self, order_ids: list[str]) -> dict[str, Order]:
        """The stored orders among order_ids, in as few BatchGetItem calls as DynamoDB allows."""
        try:
            records = list(self._records.batch_get(set(order_ids), consistent_read=True))
        except PynamoDBException as exc:
            raise StorageUnavailable("could not read orders") from exc
        return {record.id: _to_order(record) for record in records}

    def pending_due_for_sweep(self, now: datetime, limit: int) -> list[str]:
        index: Any = self._records.pending_sweep
        # An equal share per shard: a backlog in one shard must not starve the others.
        per_shard = -(-limit // PENDING_INDEX_SHARDS)
        due: list[str] = []
        try:
            for shard in range(PENDING_INDEX_SHARDS):
                due.extend(key.id for key in index.query(shard, self._records.sweep_after < now, limit=per_shard))
        except PynamoDBException as exc:
            raise StorageUnavailable("could not query pending orders") from exc
        return due

    def due_for_reconcile(
        self, cursor: ReconcileCursor | None, limit: int
    ) -> tuple[list[ReconcileCursor], ReconcileCursor]:
        """Up to limit order ids from the reconcile index, from cursor on (shard by shard, in id order).

        The cursor returned is where the next run goes on; after the last
        shard it is back at the start, and this run stops there so that no
        order is checked twice in one run.
        """
        index: Any = self._records.reconcile
        position = cursor or ReconcileCursor(0, None)
        shard, after = position.shard % RECONCILE_INDEX_SHARDS, position.after_id
        due: list[ReconcileCursor] = []
        try:
            while True:
                wanted = limit - len(due)
                condition = None if after is None else self._records.id > after
                # One more than wanted: whether the shard goes on past the budget.
                found = [key.id for key in index.query(shard, condition, limit=wanted + 1)]
                due.extend(ReconcileCursor(shard, order_id) for order_id in found[:wanted])
                if len(found) > wanted:
                    return due, due[-1]  # the budget ends inside this shard
                shard, after = shard + 1, None
                if shard == RECONCILE_INDEX_SHARDS:
                    return due, ReconcileCursor(0, None)  # a whole pass is done
                if len(due) == limit:
                    return due, ReconcileCursor(shard, None)
        except PynamoDBException as exc:
            raise StorageUnavailable("could not query the orders to reconcile") from exc

    def stop_reconciling(self, order: Order) -> None:
        """Take a failed order out of the reconcile index, if it is still as read; any other order keeps its place."""
        records = self._records
        if order.status is not OrderStatus.FAILED:
            return
        record = records(order.id)
        record.version = order.version  # PynamoDB adds "version unchanged" to the condition, then increments it
        try:
            record.update(actions=[records.reconcile_shard.remove()], condition=records.id.exists())
        except PynamoDBException as exc:
            if is_condition_failure(exc):
                return  # written meanwhile (corrected, reopened): the next pass looks again
            raise StorageUnavailable(f"could not update order {order.id}") from exc

    def list_for_account(self, query: OrderQuery) -> OrderPage:
        """One page of the account's orders, newest first, from the account-orders index (never a scan).

        Reads at most list_max_items_read items, matching the filters or not:
        a page that stops there holds fewer than query.limit orders (maybe
        none) and a cursor at the last item read, so the next page goes on
        from there and no order is skipped or given twice.
        """
        records = self._records
        index: Any = records.account_orders
        condition = None
        if query.statuses is not None:
            condition = records.status.is_in(*sorted(status.value for status in query.statuses))
        if query.instrument is not None:
            condition = _and(condition, records.instrument == query.instrument)
        if query.side is not None:
            condition = _and(condition, records.side == query.side.value)
        start_key = None
        if query.cursor is not None:
            start_key = {
                "id": {"S": query.cursor.order_id},
                "account_id": {"S": query.account_id},
                "created_at": {"S": _serialized_time(records, query.cursor.created_at)},
            }
        try:
            results = index.query(
                query.account_id,
                _created_between(records, query.created_after, query.created_before),
                filter_condition=condition,
                scan_index_forward=False,
                last_evaluated_key=start_key,
            )
            # Page by page ourselves: PynamoDB's own iteration would go on
            # reading until it has `limit` matches, however many items that takes.
            page, last_key = _read_capped(results.page_iter, records, query.limit, self._list_max_items_read)
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not list the orders of account {query.account_id}") from exc
        cursor = None
        if last_key is not None:
            cursor = OrderCursor(
                created_at=_parsed_time(records, last_key["created_at"]["S"]),
                order_id=last_key["id"]["S"],
            )
        return OrderPage(page, cursor)


def _read_capped(
    pages: Any, records: type[OrderRecord], limit: int, max_items_read: int
) -> tuple[list[Order], dict[str, Any] | None]:
    """Query pages until `limit` orders match or max_items_read items are read.

    The orders, and the key to go on after (None: nothing left to read).
    """
    orders: list[Order] = []
    read = 0
    while True:
        # DynamoDB's Limit counts the items it reads, before the filter: each
        # request reads at most what is left of the budget. At least a few
        # hundred (while the budget lasts): with a selective filter and a
        # small limit, pages of `limit` items would take many round trips.
        pages.page_size = min(max(limit, LIST_PAGE_READ), max_items_read - read)
        try:
            page = next(pages)
        except StopIteration:
            return orders, None
        read += page["ScannedCount"]
        items = page.get("Items", [])
        wanted = limit - len(orders)
        orders.extend(_to_order(records.from_raw_data(item)) for item in items[:wanted])
        if len(items) > wanted:
            # The page is full inside this response: go on right after its last order.
            return orders, items[wanted - 1]
        last_key: dict[str, Any] | None = pages.last_evaluated_key
        if last_key is None or len(orders) == limit or read >= max_items_read:
            return orders, last_key


def _serialized_time(records: type[OrderRecord], value: datetime) -> str:
    return str(records.created_at.serialize(value))  # type: ignore[no-untyped-call]


def _parsed_time(records: type[OrderRecord], text: str) -> datetime:
    parsed: datetime = records.created_at.deserialize(text)  # type: ignore[no-untyped-call]
    return parsed


def _and(condition: Any, more: Any) -> Any:
    return more if condition is None else condition & more


def _created_between(records: type[OrderRecord], after: datetime | None, before: datetime | None) -> Any:
    # Both bounds exclusive; timestamps are stored to the microsecond, so one
    # microsecond in is exactly "after" (BETWEEN is inclusive).
    tick = timedelta(microseconds=1)
    if after is not None and before is not None:
        return records.created_at.between(after + tick, before - tick)
    if after is not None:
        return records.created_at > after
    if before is not None:
        return records.created_at < before
    return None
