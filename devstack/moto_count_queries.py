"""moto counts a Query with Select=COUNT without copying the items it counts.

moto 5.2.5's Table.query deep-copies every item it keeps and projects each
through the index (moto/dynamodb/models/table.py, the end of Table.query),
then the response handler only takes `len()` of them when the request asked
for COUNT. Our create counts the account's open orders that way on every
POST /orders (chalicelib/adapters/open_orders.py, up to the account's
limit), so on the local stack a create cost a deep copy of every open order
of its account: the demo account, whose limit is a million, holds thousands
during `make bench`. A profile of moto during the bench's backlog showed
Item.__deepcopy__ and SecondaryIndex.project at ~30% of its busy time
(py-spy, 2026-12-02). DynamoDB itself returns no items for COUNT.

For the length of one COUNT Query without a projection, on that request's
thread only, the table module's `copy.deepcopy` and the index projection
hand back what they are given: the items are only counted. A COUNT with a
filter is left alone (the filter reads the projected copies). Everything else moto does,
and so its answer (Count, ScannedCount, LastEvaluatedKey), is unchanged.
"""

from __future__ import annotations

import copy
import functools
import threading
from types import SimpleNamespace
from typing import Any

import moto
import moto.dynamodb.models.table as table_module
from moto.dynamodb.models.table import SecondaryIndex
from moto.dynamodb.responses import DynamoHandler

from devstack.moto_indexes import VERIFIED_MOTO_VERSION

_counting = threading.local()  # .active: this thread's request is a COUNT Query whose items are only counted


def _only_counted() -> bool:
    return bool(getattr(_counting, "active", False))


def _deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
    return value if _only_counted() else copy.deepcopy(value, memo)


def count_queries_without_copies() -> None:
    """Patch moto (once) so that a Query with Select=COUNT copies and projects none of the items it counts."""
    original_query = DynamoHandler.query
    if getattr(original_query, "counts_without_copies", False):
        return
    if moto.__version__ != VERIFIED_MOTO_VERSION:
        raise RuntimeError(
            f"devstack.moto_count_queries was verified against moto {VERIFIED_MOTO_VERSION}, not {moto.__version__}: "
            "check that Table.query's deepcopy is still the only copy a COUNT Query makes"
        )

    @functools.wraps(original_query)
    def query(self: DynamoHandler) -> Any:
        body = self.body
        # A filter reads the projected items (an index's projection hides attributes from it), and a
        # projection is refused with COUNT by DynamoDB: for either, moto copies and projects as before.
        _counting.active = body.get("Select") == "COUNT" and not any(
            body.get(name) for name in ("FilterExpression", "QueryFilter", "ProjectionExpression", "AttributesToGet")
        )
        try:
            return original_query(self)
        finally:
            _counting.active = False

    original_project = SecondaryIndex.project

    @functools.wraps(original_project)
    def project(self: SecondaryIndex, item: Any) -> Any:
        return item if _only_counted() else original_project(self, item)

    query.counts_without_copies = True  # type: ignore[attr-defined]
    DynamoHandler.query = query  # type: ignore[method-assign]
    SecondaryIndex.project = project  # type: ignore[method-assign]
    # Table.query reaches deepcopy through its module's `copy`; only that module sees this one.
    setattr(table_module, "copy", SimpleNamespace(deepcopy=_deepcopy, copy=copy.copy))  # noqa: B010
