"""GET /orders' query: the account-orders index of the real table on the emulator, page by page."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.adapters.dynamodb import DynamoDBOrderRepository, record_class_for
from chalicelib.adapters.repository import OrderQuery
from chalicelib.domain.model import OPEN_STATUSES, TERMINAL_STATUSES, Order, OrderStatus, OrderTerms, OrderType, Side

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)
APPLE, SAP = "US0378331005", "DE0007164600"


@pytest.fixture(scope="module")
def repo(adapter_stack: dict[str, str]) -> DynamoDBOrderRepository:
    return DynamoDBOrderRepository(record_class_for(adapter_stack["OrdersTableName"]))


@pytest.fixture(scope="module")
def history(repo: DynamoDBOrderRepository) -> tuple[str, list[Order]]:
    """An account with 23 orders a second apart (newest last) and another account's orders in between."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    statuses = [OrderStatus.PENDING, OrderStatus.PLACED, OrderStatus.FILLED, OrderStatus.CANCELED]
    created = []
    for i in range(23):
        at = T0 + timedelta(seconds=i)
        terms = OrderTerms(
            OrderType.LIMIT, Side.BUY if i % 2 else Side.SELL, APPLE if i % 3 else SAP, 1 + i, Decimal("10.5")
        )
        order = replace(Order.create(account, terms, at), status=statuses[i % 4])
        created.append(repo.add(order, sweep_after=at))
        repo.add(Order.create(f"other-{account}", terms, at), sweep_after=at)
    return account, created


def all_pages(repo: DynamoDBOrderRepository, query: OrderQuery) -> list[list[Order]]:
    pages = []
    while True:
        page = repo.list_for_account(query)
        pages.append(page.orders)
        if page.next is None:
            return pages
        query = replace(query, cursor=page.next)


def ids(orders: list[Order]) -> list[str]:
    return [order.id for order in orders]


def test_pages_walk_every_order_newest_first_exactly_once(
    repo: DynamoDBOrderRepository, history: tuple[str, list[Order]]
) -> None:
    account, created = history
    pages = all_pages(repo, OrderQuery(account_id=account, limit=5))
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert ids([order for page in pages for order in page]) == ids(created[::-1])
    assert all(order.account_id == account for page in pages for order in page)


def test_an_account_sees_none_of_anothers(repo: DynamoDBOrderRepository, history: tuple[str, list[Order]]) -> None:
    account, _ = history
    page = repo.list_for_account(OrderQuery(account_id=f"nobody-{account}", limit=50))
    assert (page.orders, page.next) == ([], None)


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({"statuses": frozenset({OrderStatus.FILLED})}, lambda o: o.status is OrderStatus.FILLED),
        ({"statuses": OPEN_STATUSES}, lambda o: o.status in OPEN_STATUSES),
        ({"statuses": TERMINAL_STATUSES}, lambda o: o.status in TERMINAL_STATUSES),
        ({"instrument": SAP}, lambda o: o.terms.instrument == SAP),
        ({"side": Side.BUY}, lambda o: o.terms.side is Side.BUY),
        (
            {"instrument": APPLE, "side": Side.SELL, "statuses": frozenset({OrderStatus.PENDING})},
            lambda o: o.terms.instrument == APPLE and o.terms.side is Side.SELL and o.status is OrderStatus.PENDING,
        ),
        (
            {"created_after": T0 + timedelta(seconds=5), "created_before": T0 + timedelta(seconds=12)},
            lambda o: T0 + timedelta(seconds=5) < o.created_at < T0 + timedelta(seconds=12),
        ),
        ({"created_after": T0 + timedelta(seconds=20)}, lambda o: o.created_at > T0 + timedelta(seconds=20)),
        ({"created_before": T0 + timedelta(seconds=2)}, lambda o: o.created_at < T0 + timedelta(seconds=2)),
    ],
    ids=["status", "open", "closed", "instrument", "side", "combined", "range", "after", "until"],
)
def test_filters_across_pages_match_exactly_the_orders_that_qualify(
    repo: DynamoDBOrderRepository, history: tuple[str, list[Order]], filters: dict[str, object], keep: object
) -> None:
    account, created = history
    expected = [order for order in reversed(created) if keep(order)]  # type: ignore[operator]
    assert expected, "the fixture must have orders for every filter"
    pages = all_pages(repo, OrderQuery(account_id=account, limit=2, **filters))  # type: ignore[arg-type]
    assert ids([order for page in pages for order in page]) == ids(expected)
    assert all(len(page) <= 2 for page in pages)


def test_a_full_last_page_may_be_followed_by_an_empty_one_never_by_a_repeat(
    repo: DynamoDBOrderRepository, history: tuple[str, list[Order]]
) -> None:
    account, created = history
    seen = [order for page in all_pages(repo, OrderQuery(account_id=account, limit=23)) for order in page]
    assert ids(seen) == ids(created[::-1])
