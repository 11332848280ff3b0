"""The orders table's `account-open-orders` index: every open order by account, counted for the open-orders limit
and listed for DELETE /orders (cancel them all).

Sparse, like the sweep's index: an order carries `open_account_id` (its
account id) while it is open, and loses it with the write that makes it
terminal (orders_table._to_record sets it on every write), so the index holds
exactly the open orders and counting one account's costs a Query of its key,
never a scan. KEYS_ONLY: a count reads nothing else.

A soft limit. The index is eventually consistent (a GSI has no consistent
reads): an order stored a moment ago may not be counted yet, and concurrent
creates of one account each count the others' not at all. So a burst can
open a few more than max_open_orders: about as many as the account creates
within the index's propagation delay (normally well under a second) plus the
creates in flight at once. That is acceptable for what the limit is for, a
bound on a runaway script or a leaked key filling the book, not an exact
ledger; what must never be exceeded per order (notional, quantity) is
checked exactly, and the per-account request rate bounds the overshoot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pynamodb.attributes import UnicodeAttribute
from pynamodb.constants import COUNT
from pynamodb.exceptions import PynamoDBException
from pynamodb.indexes import GlobalSecondaryIndex, KeysOnlyProjection

from chalicelib.adapters.repository import StorageUnavailable

if TYPE_CHECKING:
    from pynamodb.models import Model

OPEN_ORDERS_INDEX_NAME = "account-open-orders"


class AccountOpenOrdersIndex(GlobalSecondaryIndex[Any]):  # type: ignore[no-untyped-call]
    """Sparse: only open orders carry open_account_id."""

    class Meta:
        index_name = OPEN_ORDERS_INDEX_NAME
        projection = KeysOnlyProjection()

    open_account_id = UnicodeAttribute(hash_key=True)
    id = UnicodeAttribute(range_key=True)


def bound_open_orders_index() -> AccountOpenOrdersIndex:
    """A fresh index object for one bound record class (PynamoDB keeps the model on the index's Meta)."""
    meta = type("Meta", (), {"index_name": OPEN_ORDERS_INDEX_NAME, "projection": KeysOnlyProjection()})
    index: AccountOpenOrdersIndex = type("BoundAccountOpenOrdersIndex", (AccountOpenOrdersIndex,), {"Meta": meta})()
    return index


def count_open_orders(records: type[Model], account_id: str, stop_at: int) -> int:
    """The account's open orders, counted up to stop_at (a larger count is given as stop_at).

    Query with Select=COUNT and Limit: DynamoDB stops evaluating at the limit,
    so an account with a large book costs one small read, not a read of its
    whole book. (PynamoDB's Model.count passes the limit as a page size and
    goes on counting every page.) More pages only past DynamoDB's 1 MB.
    """
    if stop_at <= 0:
        return 0
    connection: Any = records._get_connection()
    counted = 0
    start_key = None
    try:
        while counted < stop_at:
            page = connection.query(
                account_id,
                index_name=OPEN_ORDERS_INDEX_NAME,
                select=COUNT,
                limit=stop_at - counted,
                exclusive_start_key=start_key,
            )
            counted += int(page.get("Count", 0))
            start_key = page.get("LastEvaluatedKey")
            if not start_key:
                break
    except PynamoDBException as exc:
        raise StorageUnavailable(f"could not count the open orders of account {account_id}") from exc
    return min(counted, stop_at)


def open_order_ids(records: type[Model], account_id: str, after: str | None, limit: int) -> list[str]:
    """Up to limit ids of the account's open orders, in id order, each after `after` (eventually consistent).

    The index's sort key is the order id, so "after" is a key condition:
    DynamoDB reads from there on, and a caller that stops part way (a
    request's time or size budget) goes on later from the last id it
    handled. KEYS_ONLY: the caller reads the orders themselves (strongly
    consistent) by id. More pages only past DynamoDB's 1 MB.
    """
    if limit <= 0:
        return []
    connection: Any = records._get_connection()
    condition = records.id > after if after is not None else None  # type: ignore[attr-defined]
    ids: list[str] = []
    start_key = None
    try:
        while len(ids) < limit:
            page = connection.query(
                account_id,
                range_key_condition=condition,
                index_name=OPEN_ORDERS_INDEX_NAME,
                limit=limit - len(ids),
                exclusive_start_key=start_key,
            )
            ids += [item["id"]["S"] for item in page.get("Items", [])]
            start_key = page.get("LastEvaluatedKey")
            if not start_key:
                break
    except PynamoDBException as exc:
        raise StorageUnavailable(f"could not list the open orders of account {account_id}") from exc
    return ids
