"""Risk limits' storage on a real emulator over HTTP: the accounts table, and counting open orders by their index."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal

import boto3
import pytest

from chalicelib.adapters.accounts_table import DynamoDBAccountLimits, account_record_class_for
from chalicelib.adapters.orders_table import DynamoDBOrderRepository, order_record_class_for
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.model import Order, OrderStatus, OrderTerms, OrderType, Side
from chalicelib.domain.risk import AccountLimits
from devstack.processes import free_port
from tests.contracts.order_repository import T0
from tests.polling import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def accounts(adapter_stack: dict[str, str]) -> DynamoDBAccountLimits:
    return DynamoDBAccountLimits(account_record_class_for(adapter_stack["AccountsTableName"]))


@pytest.fixture
def repo(adapter_stack: dict[str, str]) -> DynamoDBOrderRepository:
    return DynamoDBOrderRepository(order_record_class_for(adapter_stack["OrdersTableName"]))


def account() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


def test_an_account_without_an_item_has_no_limits_of_its_own(accounts: DynamoDBAccountLimits) -> None:
    assert accounts.get(account()) == AccountLimits()


def test_setting_some_limits_keeps_the_others_and_the_notional_exactly(
    accounts: DynamoDBAccountLimits, adapter_stack: dict[str, str], aws_endpoint: str
) -> None:
    who = account()
    assert accounts.set(who, AccountLimits(max_order_notional=Decimal("250000.50"))) == AccountLimits(
        max_order_notional=Decimal("250000.50")
    )
    both = accounts.set(who, AccountLimits(max_open_orders=0))
    assert both == AccountLimits(max_order_notional=Decimal("250000.50"), max_open_orders=0)
    assert accounts.get(who) == both
    assert accounts.set(who, AccountLimits()) == both  # nothing given: nothing written
    table = boto3.resource("dynamodb", endpoint_url=aws_endpoint).Table(adapter_stack["AccountsTableName"])
    item = table.get_item(Key={"account_id": who}, ConsistentRead=True)["Item"]
    # The names infra/resources.yaml documents: the notional a string, the counts numbers.
    assert item == {"account_id": who, "max_order_notional": "250000.50", "max_open_orders": 0}


def new_order(account_id: str, key: str) -> Order:
    terms = OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", 5, Decimal("10.00"), key)
    return Order.create(account_id, terms, T0)


def test_open_orders_are_counted_per_account_up_to_the_limit_and_done_ones_leave_the_count(
    repo: DynamoDBOrderRepository, adapter_stack: dict[str, str], aws_endpoint: str
) -> None:
    mine, theirs = account(), account()
    stored = [repo.add(new_order(mine, f"k-{n}"), sweep_after=T0) for n in range(5)]
    repo.add(new_order(theirs, "k-0"), sweep_after=T0)
    assert wait_until(lambda: repo.count_open(mine, stop_at=100) == 5, timeout_s=10)  # an index: eventually
    assert repo.count_open(mine, stop_at=3) == 3  # stops at the limit
    assert repo.count_open(mine, stop_at=0) == 0
    assert repo.count_open(theirs, stop_at=100) == 1

    # Placed and pending_cancel are open still; canceled, filled and failed are not.
    placed = repo.update(dataclasses.replace(stored[0], status=OrderStatus.PLACED), sweep_after=None)
    repo.update(dataclasses.replace(placed, status=OrderStatus.PENDING_CANCEL), sweep_after=T0)
    for order, status in zip(stored[1:4], (OrderStatus.CANCELED, OrderStatus.FILLED, OrderStatus.FAILED), strict=True):
        repo.update(dataclasses.replace(order, status=status), sweep_after=None)
    assert wait_until(lambda: repo.count_open(mine, stop_at=100) == 2, timeout_s=10)

    # Sparse: a done order's item carries no open_account_id at all.
    table = boto3.resource("dynamodb", endpoint_url=aws_endpoint).Table(adapter_stack["OrdersTableName"])
    done = table.get_item(Key={"id": stored[1].id}, ConsistentRead=True)["Item"]
    assert "open_account_id" not in done
    still_open = table.get_item(Key={"id": stored[4].id}, ConsistentRead=True)["Item"]
    assert still_open["open_account_id"] == mine


def test_unreachable_tables_are_storage_unavailable(adapter_stack: dict[str, str]) -> None:
    dead = {"host": f"http://127.0.0.1:{free_port()}", "max_retry_attempts": 0, "connect_timeout_s": 0.5}
    accounts = DynamoDBAccountLimits(account_record_class_for(adapter_stack["AccountsTableName"], **dead))
    with pytest.raises(StorageUnavailable):
        accounts.get("acme")
    with pytest.raises(StorageUnavailable):
        accounts.set("acme", AccountLimits(max_open_orders=1))
    repo = DynamoDBOrderRepository(order_record_class_for(adapter_stack["OrdersTableName"], **dead))
    with pytest.raises(StorageUnavailable):
        repo.count_open("acme", stop_at=10)
    with pytest.raises(StorageUnavailable):
        repo.open_order_ids("acme", None, 10)


def test_open_order_ids_are_listed_in_id_order_after_a_given_one_and_done_ones_leave(
    repo: DynamoDBOrderRepository,
) -> None:
    mine, theirs = account(), account()
    stored = [repo.add(new_order(mine, f"k-{n}"), sweep_after=T0) for n in range(5)]
    repo.add(new_order(theirs, "k-0"), sweep_after=T0)
    ids = sorted(order.id for order in stored)
    assert wait_until(lambda: repo.open_order_ids(mine, None, 100) == ids, timeout_s=10)  # an index: eventually
    assert repo.open_order_ids(mine, None, 2) == ids[:2]
    assert repo.open_order_ids(mine, ids[1], 2) == ids[2:4]
    assert repo.open_order_ids(mine, ids[3], 100) == ids[4:]
    assert repo.open_order_ids(mine, ids[4], 100) == []
    assert repo.open_order_ids(mine, None, 0) == []
    done = next(order for order in stored if order.id == ids[2])
    repo.update(dataclasses.replace(done, status=OrderStatus.CANCELED), sweep_after=None)
    assert wait_until(lambda: repo.open_order_ids(mine, ids[0], 100) == [ids[1], *ids[3:]], timeout_s=10)
