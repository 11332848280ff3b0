"""GET /orders' query on the real table's account-orders index on the emulator, page by page: the listing contract."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chalicelib.adapters.orders_table import DynamoDBOrderRepository, order_record_class_for
from chalicelib.adapters.repository import OrderQuery
from chalicelib.domain.model import Order, OrderStatus
from tests.contracts.order_listing_cap import CAP, Capped, OrderListingCapContract
from tests.contracts.order_repository import OrderListingContract

pytestmark = pytest.mark.integration


class TestDynamoDBOrderListing(OrderListingContract):
    @pytest.fixture(scope="class")
    @classmethod
    def repo(cls, adapter_stack: dict[str, str]) -> DynamoDBOrderRepository:
        return DynamoDBOrderRepository(order_record_class_for(adapter_stack["OrdersTableName"]))


class TestDynamoDBListingCap(OrderListingCapContract):
    """The read cap against the real index on the emulator: short pages, cursors, every match exactly once."""

    @pytest.fixture(scope="class")
    @classmethod
    def repo(cls, adapter_stack: dict[str, str]) -> DynamoDBOrderRepository:
        return DynamoDBOrderRepository(order_record_class_for(adapter_stack["OrdersTableName"]))

    @pytest.fixture(scope="class")
    @classmethod
    def capped(cls, repo: DynamoDBOrderRepository, adapter_stack: dict[str, str]) -> Capped:
        records = order_record_class_for(adapter_stack["OrdersTableName"])
        return lambda max_items_read: DynamoDBOrderRepository(records, list_max_items_read=max_items_read)

    def test_no_listing_reads_more_than_the_cap(
        self, adapter_stack: dict[str, str], history: tuple[str, list[Order]]
    ) -> None:
        account, created = history
        repo = DynamoDBOrderRepository(
            order_record_class_for(adapter_stack["OrdersTableName"]), list_max_items_read=CAP
        )
        scanned: list[int] = []
        repo.client.meta.events.register(
            "after-call.dynamodb.Query", lambda parsed, **_: scanned.append(parsed.get("ScannedCount", 0))
        )
        query = OrderQuery(account_id=account, limit=500, statuses=frozenset({OrderStatus.FILLED}))
        per_page = []
        while True:
            before = len(scanned)
            page = repo.list_for_account(query)
            per_page.append(sum(scanned[before:]))
            if page.next is None:
                break
            query = replace(query, cursor=page.next)
        assert max(per_page) <= CAP
        assert sum(per_page) == len(created)  # the whole history, read once over all pages
