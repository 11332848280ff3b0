"""GET /orders' read cap as a contract the in-memory fake and the DynamoDB adapter both pass.

A listing reads at most a fixed number of orders per request, matching its
filters or not: a selective filter over a long history answers short pages
(even empty ones) with a cursor, and paging on finds every match exactly once.
Subclasses give a class-scoped `repo` and `capped`: the same stored orders
seen through a repository with a given cap.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.adapters.repository import OrderQuery, OrderRepository
from chalicelib.domain.model import Order, OrderStatus, OrderTerms, OrderType, Side
from tests.contracts.order_repository import all_pages, ids

T0 = datetime(2025, 3, 4, 10, 0, 0, 250000, tzinfo=UTC)
HISTORY = 60  # orders of the account, newest last
EVERY = 10  # one in EVERY of them is filled, the rest canceled
CAP = 20

Capped = Callable[[int], OrderRepository]


class OrderListingCapContract:
    @pytest.fixture(scope="class")
    @classmethod
    def repo(cls) -> OrderRepository:
        raise NotImplementedError("a subclass provides the repository the history is stored through")

    @pytest.fixture(scope="class")
    @classmethod
    def capped(cls, repo: OrderRepository) -> Capped:
        raise NotImplementedError("a subclass provides the same stored orders through a repository with a given cap")

    @pytest.fixture(scope="class")
    @classmethod
    def history(cls, repo: OrderRepository) -> tuple[str, list[Order]]:
        """HISTORY orders a second apart, the oldest first; the filled ones are the 1st, 11th, 21st, ... oldest."""
        account = f"acct-cap-{uuid.uuid4().hex[:8]}"
        created = []
        for i in range(HISTORY):
            at = T0 + timedelta(seconds=i)
            terms = OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", 1 + i, Decimal("10.50"))
            status = OrderStatus.FILLED if i % EVERY == 0 else OrderStatus.CANCELED
            created.append(repo.add(replace(Order.create(account, terms, at), status=status), sweep_after=at))
        return account, created

    def test_a_selective_filter_answers_short_pages_with_a_cursor_and_finds_every_match_once(
        self, capped: Capped, history: tuple[str, list[Order]]
    ) -> None:
        account, created = history
        filled = [order for order in reversed(created) if order.status is OrderStatus.FILLED]
        query = OrderQuery(account_id=account, limit=50, statuses=frozenset({OrderStatus.FILLED}))
        pages = all_pages(capped(CAP), query)
        # 60 orders read 20 at a time: 2 of each 20 match, far fewer than 50.
        assert [len(page) for page in pages][:3] == [2, 2, 2]
        assert ids([order for page in pages for order in page]) == ids(filled)

    def test_a_page_may_hold_no_match_and_still_have_a_cursor(
        self, capped: Capped, history: tuple[str, list[Order]]
    ) -> None:
        account, created = history
        filled = [order for order in reversed(created) if order.status is OrderStatus.FILLED]
        query = OrderQuery(account_id=account, limit=50, statuses=frozenset({OrderStatus.FILLED}))
        repo = capped(EVERY - 1)  # the 9 newest orders hold no filled one
        first = repo.list_for_account(query)
        assert (first.orders, first.next is not None) == ([], True)
        pages = all_pages(repo, query)
        assert ids([order for page in pages for order in page]) == ids(filled)
        none_match = all_pages(repo, replace(query, statuses=frozenset({OrderStatus.PENDING})))
        assert [order for page in none_match for order in page] == []
        assert len(none_match) >= HISTORY // (EVERY - 1)  # one (empty) page per 9 orders read

    def test_a_cap_below_the_limit_cuts_unfiltered_pages_without_losing_or_repeating(
        self, capped: Capped, history: tuple[str, list[Order]]
    ) -> None:
        account, created = history
        pages = all_pages(capped(7), OrderQuery(account_id=account, limit=50))
        assert all(len(page) <= 7 for page in pages)
        assert ids([order for page in pages for order in page]) == ids(created[::-1])

    def test_a_cap_above_the_history_changes_nothing(self, capped: Capped, history: tuple[str, list[Order]]) -> None:
        account, created = history
        pages = all_pages(capped(1_000), OrderQuery(account_id=account, limit=25))
        assert [len(page) for page in pages][:3] == [25, 25, 10]
        assert ids([order for page in pages for order in page]) == ids(created[::-1])
