"""The DynamoDB order repository on a real emulator over HTTP: the repository contract, and an unreachable table."""

from __future__ import annotations

import pytest

from chalicelib.adapters.orders_table import DynamoDBOrderRepository, order_record_class_for
from chalicelib.adapters.repository import StorageUnavailable
from devstack.processes import free_port
from tests.contracts.order_repository import T0, OrderRepositoryContract, new_order

pytestmark = pytest.mark.integration


class TestDynamoDBOrderRepository(OrderRepositoryContract):
    @pytest.fixture
    def repo(self, adapter_stack: dict[str, str]) -> DynamoDBOrderRepository:
        return DynamoDBOrderRepository(order_record_class_for(adapter_stack["OrdersTableName"]))


def test_an_unreachable_table_is_storage_unavailable(adapter_stack: dict[str, str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    repo = DynamoDBOrderRepository(
        order_record_class_for(adapter_stack["OrdersTableName"], host=dead, max_retry_attempts=0, connect_timeout_s=0.5)
    )
    with pytest.raises(StorageUnavailable):
        repo.add(new_order(), sweep_after=T0)
    with pytest.raises(StorageUnavailable):
        repo.get("00000000-0000-4000-8000-000000000000")
