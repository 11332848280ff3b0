"""The DynamoDB order repository on a real emulator over HTTP: the repository contract, and an unreachable table."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from chalicelib.adapters.orders_table import DynamoDBOrderRepository, order_record_class_for
from chalicelib.adapters.repository import OrderQuery, StorageUnavailable
from chalicelib.domain.model import Order, OrderTerms, OrderType, Side, TimeInForce
from devstack.processes import free_port
from tests.contracts.order_repository import T0, OrderRepositoryContract, gtd_stop_limit_terms, new_order

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


def test_the_order_terms_round_trip_and_items_from_before_read_as_day_orders(adapter_stack: dict[str, str]) -> None:
    records = order_record_class_for(adapter_stack["OrdersTableName"])
    repo = DynamoDBOrderRepository(records)
    terms = gtd_stop_limit_terms()
    stored = repo.add(Order.create("acct-terms", terms, T0), sweep_after=T0)
    read = repo.get(stored.id)
    assert read == stored
    assert read.terms == terms
    assert str(read.terms.stop_price) == "118.50"
    # A status change leaves the terms as they were; a listing (the account index) shows them too.
    placed = repo.update(read.placed("X1", T0 + timedelta(seconds=1)), sweep_after=None)
    assert placed.terms == terms
    assert repo.get(stored.id) == placed
    (listed,) = repo.list_for_account(OrderQuery(account_id="acct-terms", limit=10)).orders
    assert listed.terms == terms

    # An item as the table held them before time in force existed: none of the new attributes.
    before = Order.create("acct-before", OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", 2, Decimal("5.00")), T0)
    records(
        before.id,
        account_id=before.account_id,
        type="limit",
        side="buy",
        instrument="US0378331005",
        quantity=2,
        limit_price="5.00",
        status="pending",
        created_at=T0,
        updated_at=T0,
    ).save()
    old = repo.get(before.id)
    assert old is not None
    assert (old.terms.time_in_force, old.terms.expires_at, old.terms.stop_price) == (TimeInForce.DAY, None, None)
    assert old.terms == before.terms
