"""GET /orders' query on the real table's account-orders index on the emulator, page by page: the listing contract."""

from __future__ import annotations

import pytest

from chalicelib.adapters.orders_table import DynamoDBOrderRepository, order_record_class_for
from tests.contracts.order_repository import OrderListingContract

pytestmark = pytest.mark.integration


class TestDynamoDBOrderListing(OrderListingContract):
    @pytest.fixture(scope="class")
    @classmethod
    def repo(cls, adapter_stack: dict[str, str]) -> DynamoDBOrderRepository:
        return DynamoDBOrderRepository(order_record_class_for(adapter_stack["OrdersTableName"]))
