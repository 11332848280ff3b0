"""The list read cap in memory: the fake keeps the adapter's contract, and the adapter's page loop stays in budget."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.adapters.orders_table import LIST_PAGE_READ, _read_capped, order_record_class_for
from chalicelib.adapters.repository import OrderRepository
from chalicelib.domain.model import Order, OrderTerms, OrderType, Side
from tests.contracts.order_listing_cap import Capped, OrderListingCapContract
from tests.unit.fakes import FakeRepository

pytestmark = pytest.mark.unit


class TestFakeListingCap(OrderListingCapContract):
    @pytest.fixture(scope="class")
    @classmethod
    def repo(cls) -> FakeRepository:
        return FakeRepository()

    @pytest.fixture(scope="class")
    @classmethod
    def capped(cls, repo: OrderRepository) -> Capped:
        assert isinstance(repo, FakeRepository)

        def with_cap(max_items_read: int) -> OrderRepository:
            view = FakeRepository(list_max_items_read=max_items_read)
            view.orders = repo.orders  # the same stored orders
            return view

        return with_cap


RECORDS = order_record_class_for("orders-unit")
T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


def raw_item(n: int) -> dict[str, Any]:
    """An item as DynamoDB returns it from the account-orders index (all attributes projected)."""
    terms = OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", 1, Decimal("10.50"))
    order = dataclasses.replace(Order.create("acct-1", terms, T0 - timedelta(seconds=n)), version=1)
    record = RECORDS(
        order.id,
        account_id=order.account_id,
        type="limit",
        side="buy",
        instrument="US0378331005",
        quantity=1,
        limit_price="10.50",
        status="placed",
        created_at=order.created_at,
        updated_at=order.updated_at,
        version=1,
    )
    item: dict[str, Any] = record.serialize()
    return item


class ScriptedPages:
    """PynamoDB's PageIterator over a fixed index: each request reads page_size items and keeps those `matches` says."""

    def __init__(self, items: list[dict[str, Any]], matches: Any) -> None:
        self.items, self.matches = items, matches
        self.position = 0
        self.page_size: int | None = None
        self.last_evaluated_key: dict[str, Any] | None = None
        self.requests: list[int] = []

    def __next__(self) -> dict[str, Any]:
        assert self.page_size is not None and self.page_size >= 1
        self.requests.append(self.page_size)
        read = self.items[self.position : self.position + self.page_size]
        self.position += len(read)
        more = self.position < len(self.items)
        self.last_evaluated_key = read[-1] if more else None
        kept = [item for n, item in enumerate(read, start=self.position - len(read)) if self.matches(n)]
        return {"Items": kept, "Count": len(kept), "ScannedCount": len(read)}


def test_no_request_reads_past_the_budget_and_a_page_cut_short_says_where_to_go_on() -> None:
    items = [raw_item(n) for n in range(3_000)]
    pages = ScriptedPages(items, matches=lambda n: n % 100 == 0)
    orders, last_key = _read_capped(pages, RECORDS, limit=500, max_items_read=1_000)
    assert sum(pages.requests) == 1_000  # 500 and 500: never more than the budget
    assert pages.requests == [500, 500]
    assert len(orders) == 10
    assert last_key == items[999]


def test_small_limits_read_a_few_hundred_items_per_request() -> None:
    pages = ScriptedPages([raw_item(n) for n in range(3_000)], matches=lambda n: n % 1000 == 999)
    orders, last_key = _read_capped(pages, RECORDS, limit=5, max_items_read=1_000)
    assert pages.requests == [LIST_PAGE_READ] * (1_000 // LIST_PAGE_READ)
    assert len(orders) == 1
    assert last_key is not None


def test_a_page_full_inside_a_response_goes_on_right_after_its_last_order() -> None:
    items = [raw_item(n) for n in range(300)]
    pages = ScriptedPages(items, matches=lambda n: True)
    orders, last_key = _read_capped(pages, RECORDS, limit=3, max_items_read=1_000)
    assert pages.requests == [LIST_PAGE_READ]
    assert [order.id for order in orders] == [item["id"]["S"] for item in items[:3]]
    assert last_key == items[2]


def test_the_end_of_the_index_is_no_cursor() -> None:
    pages = ScriptedPages([raw_item(n) for n in range(30)], matches=lambda n: n % 2 == 0)
    orders, last_key = _read_capped(pages, RECORDS, limit=50, max_items_read=1_000)
    assert (len(orders), last_key) == (15, None)
