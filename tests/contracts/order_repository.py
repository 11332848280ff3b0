"""The order repository's contract: one suite that the in-memory fake and the DynamoDB adapter both pass.

A test module subclasses a contract class and gives it a `repo` fixture:
tests/unit/adapters/test_fake_order_repository.py runs it against the fake,
tests/integration/test_dynamodb_repository.py and test_list_orders.py against
the DynamoDB table on the emulator. What the fake copies by hand from the
adapter (the sweep index: who is in it, from when; listing: order, filters,
pages) is checked here against the real thing.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.adapters.repository import ConcurrentModification, OrderAlreadyExists, OrderQuery, OrderRepository
from chalicelib.domain.model import (
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    Order,
    OrderStatus,
    OrderTerms,
    OrderType,
    Side,
    TimeInForce,
)
from chalicelib.domain.replace import TermChanges, replacement_for, replacement_terms

T0 = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)
APPLE, SAP = "US0378331005", "DE0007164600"


def new_order(client_order_id: str | None = None, price: str | None = "123.45") -> Order:
    terms = OrderTerms(
        OrderType.LIMIT if price else OrderType.MARKET,
        Side.SELL,
        "DE0007164600",
        7,
        Decimal(price) if price else None,
        client_order_id,
    )
    return Order.create("acct-1", terms, T0)


def gtd_stop_limit_terms(client_order_id: str = "terms-1") -> OrderTerms:
    """Terms with every field of issue 17 set (time in force gtd, its expiry, a stop price): to store and read back."""
    return OrderTerms(
        OrderType.STOP_LIMIT,
        Side.SELL,
        SAP,
        4,
        Decimal("117.00"),
        client_order_id,
        time_in_force=TimeInForce.GTD,
        expires_at=datetime(2026, 12, 20, 15, 0, tzinfo=UTC),
        stop_price=Decimal("118.50"),
    )


def reconcile_pass(repo: OrderRepository, limit: int) -> list[str]:
    """Every id one whole pass of the reconciler's index yields, run after run from a fresh cursor."""
    seen: list[str] = []
    cursor = None
    for _ in range(10_000):
        due, cursor = repo.due_for_reconcile(cursor, limit)
        assert len(due) <= limit
        seen.extend(str(position.after_id) for position in due)
        if cursor.shard == 0 and cursor.after_id is None:
            return seen
    raise AssertionError("the reconciler's cursor never came back to the start")


def all_pages(repo: OrderRepository, query: OrderQuery) -> list[list[Order]]:
    pages = []
    while True:
        page = repo.list_for_account(query)
        pages.append(page.orders)
        if page.next is None:
            return pages
        query = replace(query, cursor=page.next)


def ids(orders: list[Order]) -> list[str]:
    return [order.id for order in orders]


class OrderRepositoryContract:
    """Storing, reading, conditional writes and the sweep's index; subclasses provide `repo`."""

    @pytest.fixture
    def repo(self) -> OrderRepository:
        raise NotImplementedError("a subclass provides the repository under test")

    def test_an_order_round_trips_exactly(self, repo: OrderRepository) -> None:
        order = new_order("client-1", price="0.10")
        stored = repo.add(order, sweep_after=T0 + timedelta(minutes=1))
        read = repo.get(order.id)
        assert read == stored
        assert read is not None
        assert read.terms.limit_price == Decimal("0.10")
        assert read.created_at == T0
        assert read.version == 1

    def test_cancel_times_and_every_reopening_round_trip(self, repo: OrderRepository) -> None:
        stored = repo.add(new_order(), sweep_after=T0)
        failed = repo.update(stored.failed("exchange unavailable after 3 attempts", T0), sweep_after=None)
        again = repo.update(failed.reopened(T0 + timedelta(seconds=1), by="arn:aws:sts::1:assumed-role/ops/a"), T0)
        failed = repo.update(again.failed("rejected by the exchange: halted", T0), sweep_after=None)
        reopened = repo.update(failed.reopened(T0 + timedelta(seconds=2), by="bob"), sweep_after=T0)
        placed = reopened.placed("X1", T0 + timedelta(seconds=3))
        canceling = repo.update(placed.cancel_requested(T0 + timedelta(seconds=3)), sweep_after=T0)
        sent = repo.update(canceling.cancel_sent(T0 + timedelta(seconds=4), timedelta(seconds=5)), sweep_after=None)
        read = repo.get(sent.id)
        assert read == sent
        assert read is not None
        assert [(r.by, r.earlier_failure) for r in read.reopenings] == [
            ("arn:aws:sts::1:assumed-role/ops/a", "exchange unavailable after 3 attempts"),
            ("bob", "rejected by the exchange: halted"),
        ]
        assert (read.cancel_queued_at, read.cancel_sent_at) == (T0 + timedelta(seconds=3), T0 + timedelta(seconds=4))

    def test_a_replacement_and_its_original_change_are_written_together(self, repo: OrderRepository) -> None:
        placed = repo.update(repo.add(new_order(), sweep_after=T0).placed("X1", T0), sweep_after=None)
        terms = replacement_terms(placed, TermChanges(quantity=9, client_order_id=f"r-{placed.id}"))
        replacement = replacement_for(placed, terms, T0, "corr")
        pending_replace = placed.replace_requested(replacement.id, T0)
        stored, original = repo.add_replacement(replacement, pending_replace, sweep_after=T0)
        assert (stored, original) == (repo.get(replacement.id), repo.get(placed.id))
        assert (stored.replaces, stored.version, stored.status) == (placed.id, 1, OrderStatus.PENDING)
        assert (original.replaced_by, original.version, original.status) == (
            replacement.id,
            placed.version + 1,
            OrderStatus.PENDING_REPLACE,
        )
        # The replacement is owed its placement: the sweep finds it; the original is owed nothing.
        assert replacement.id in repo.pending_due_for_sweep(T0 + timedelta(seconds=1), limit=1000)
        assert placed.id not in repo.pending_due_for_sweep(T0 + timedelta(seconds=1), limit=1000)

    def test_a_replace_writes_nothing_if_either_condition_fails(self, repo: OrderRepository) -> None:
        placed = repo.update(repo.add(new_order(), sweep_after=T0).placed("X1", T0), sweep_after=None)
        taken = repo.add(new_order(), sweep_after=T0)
        replacement = dataclasses.replace(replacement_for(placed, placed.terms, T0, None), id=taken.id)
        with pytest.raises(OrderAlreadyExists):
            repo.add_replacement(replacement, placed.replace_requested(taken.id, T0), sweep_after=T0)
        assert repo.get(placed.id) == placed
        fresh = replacement_for(placed, placed.terms, T0, None)
        stale = dataclasses.replace(placed, version=placed.version - 1)
        with pytest.raises(ConcurrentModification):
            repo.add_replacement(fresh, stale.replace_requested(fresh.id, T0), sweep_after=T0)
        assert repo.get(fresh.id) is None
        assert repo.get(placed.id) == placed

    def test_a_market_order_has_no_price(self, repo: OrderRepository) -> None:
        order = new_order(price=None)
        repo.add(order, sweep_after=T0)
        read = repo.get(order.id)
        assert read is not None
        assert read.terms.limit_price is None

    def test_the_same_id_cannot_be_added_twice(self, repo: OrderRepository) -> None:
        order = new_order()
        repo.add(order, sweep_after=T0)
        with pytest.raises(OrderAlreadyExists):
            repo.add(dataclasses.replace(order, terms=dataclasses.replace(order.terms, quantity=1)), sweep_after=T0)
        read = repo.get(order.id)
        assert read is not None
        assert read.terms.quantity == 7

    def test_unknown_order_is_none(self, repo: OrderRepository) -> None:
        assert repo.get("00000000-0000-4000-8000-000000000000") is None

    def test_a_stale_copy_cannot_overwrite_a_newer_one(self, repo: OrderRepository) -> None:
        stored = repo.add(new_order(), sweep_after=T0)
        placed = repo.update(stored.placed("X1", T0), sweep_after=None)
        assert placed.version == 2
        with pytest.raises(ConcurrentModification):
            repo.update(stored.failed("late", T0), sweep_after=None)
        read = repo.get(stored.id)
        assert read is not None
        assert read.status is OrderStatus.PLACED
        assert read.exchange_order_id == "X1"

    def test_only_pending_orders_past_their_sweep_time_are_due(self, repo: OrderRepository) -> None:
        # Far in the past so that orders other tests left behind sort after ours.
        early = datetime(2001, 1, 1, tzinfo=UTC)
        due = repo.add(new_order(), sweep_after=early)
        later = repo.add(new_order(), sweep_after=early + timedelta(hours=1))
        settled = repo.add(new_order(), sweep_after=early)
        repo.update(settled.placed("X2", T0), sweep_after=None)
        found = repo.pending_due_for_sweep(early + timedelta(minutes=1), limit=1000)
        assert due.id in found
        assert later.id not in found
        assert settled.id not in found
        # Moving the sweep time on takes it out of what is due.
        repo.update(due, sweep_after=early + timedelta(days=1))
        assert due.id not in repo.pending_due_for_sweep(early + timedelta(minutes=1), limit=1000)

    # Each test below sweeps from a moment of its own, long past, so that what
    # other tests left in a shared table is never due before its orders.

    def test_due_means_strictly_before_its_sweep_time_and_to_the_microsecond(self, repo: OrderRepository) -> None:
        due_at = datetime(2002, 1, 1, 0, 0, 0, 500, tzinfo=UTC)
        stored = repo.add(new_order(), sweep_after=due_at)
        assert stored.id not in repo.pending_due_for_sweep(due_at, limit=1000)
        assert stored.id in repo.pending_due_for_sweep(due_at + timedelta(microseconds=1), limit=1000)

    def test_an_order_owed_work_keeps_its_sweep_time_when_a_write_names_none(self, repo: OrderRepository) -> None:
        # E.g. a failed attempt's own bookkeeping, or an execution report on a
        # pending_cancel order: the order stays where the sweep will find it.
        early = datetime(2003, 1, 1, tzinfo=UTC)
        lease_over = early + timedelta(seconds=15)
        pending = repo.add(new_order(), sweep_after=early)
        retried = repo.update(pending.attempt_failed("timeout", T0), sweep_after=None)
        claimed = repo.add(new_order(), sweep_after=early)
        pending_cancel = repo.update(claimed.claimed_for_placement(early, lease_over).cancel_requested(early), early)
        assert pending_cancel.status is OrderStatus.PENDING_CANCEL
        partly_filled = repo.update(dataclasses.replace(pending_cancel, filled_quantity=3), sweep_after=None)
        due = repo.pending_due_for_sweep(early + timedelta(minutes=1), limit=1000)
        assert {retried.id, partly_filled.id} <= set(due)

    def test_a_done_order_leaves_the_sweep_index_whatever_sweep_time_it_is_given(self, repo: OrderRepository) -> None:
        early = datetime(2004, 1, 1, tzinfo=UTC)
        stored = repo.add(new_order(), sweep_after=early)
        repo.update(stored.failed("exchange unavailable after 3 attempts", T0), sweep_after=early)
        assert stored.id not in repo.pending_due_for_sweep(early + timedelta(days=1), limit=1000)

    def test_the_reconciler_sees_open_and_failed_orders_once_per_pass_and_never_done_ones(
        self, repo: OrderRepository
    ) -> None:
        pending = repo.add(new_order(), sweep_after=T0)
        placed = repo.update(repo.add(new_order(), sweep_after=T0).placed("X1", T0), sweep_after=None)
        failed = repo.update(repo.add(new_order(), sweep_after=T0).failed("gave up", T0), sweep_after=None)
        done = repo.update(repo.add(new_order(), sweep_after=T0).placed("X2", T0), sweep_after=None)
        repo.update(dataclasses.replace(done, status=OrderStatus.CANCELED), sweep_after=None)
        seen = reconcile_pass(repo, limit=2)
        mine = [order_id for order_id in seen if order_id in {pending.id, placed.id, failed.id, done.id}]
        assert sorted(mine) == sorted([pending.id, placed.id, failed.id])  # each once, the done one never

    def test_a_failed_order_can_be_dropped_from_the_reconciler_and_no_other(self, repo: OrderRepository) -> None:
        failed = repo.update(repo.add(new_order(), sweep_after=T0).failed("gave up", T0), sweep_after=None)
        placed = repo.update(repo.add(new_order(), sweep_after=T0).placed("X1", T0), sweep_after=None)
        stale = repo.update(repo.add(new_order(), sweep_after=T0).failed("gave up", T0), sweep_after=None)
        repo.update(stale.reopened(T0, by="ops-test"), sweep_after=T0)  # reopened since `stale` was read
        repo.stop_reconciling(failed)
        repo.stop_reconciling(placed)  # not failed: stays
        repo.stop_reconciling(stale)  # written since: stays
        seen = reconcile_pass(repo, limit=50)
        assert failed.id not in seen
        assert {placed.id, stale.id} <= set(seen)
        dropped = repo.get(failed.id)
        assert dropped is not None
        assert dataclasses.replace(dropped, version=failed.version) == failed  # nothing else about it changed

    def test_get_many_returns_the_stored_orders_among_the_ids(self, repo: OrderRepository) -> None:
        first, second = repo.add(new_order(), sweep_after=T0), repo.add(new_order(), sweep_after=T0)
        missing = str(uuid.uuid4())
        assert repo.get_many([first.id, second.id, missing]) == {first.id: first, second.id: second}


class OrderListingContract:
    """GET /orders' query, page by page; subclasses provide a class-scoped `repo` that may hold other orders too."""

    @pytest.fixture(scope="class")
    @classmethod
    def repo(cls) -> OrderRepository:
        raise NotImplementedError("a subclass provides the repository under test")

    @pytest.fixture(scope="class")
    @classmethod
    def history(cls, repo: OrderRepository) -> tuple[str, list[Order]]:
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

    def test_pages_walk_every_order_newest_first_exactly_once(
        self, repo: OrderRepository, history: tuple[str, list[Order]]
    ) -> None:
        account, created = history
        pages = all_pages(repo, OrderQuery(account_id=account, limit=5))
        assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
        assert ids([order for page in pages for order in page]) == ids(created[::-1])
        assert all(order.account_id == account for page in pages for order in page)

    def test_an_account_sees_none_of_anothers(self, repo: OrderRepository, history: tuple[str, list[Order]]) -> None:
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
        self, repo: OrderRepository, history: tuple[str, list[Order]], filters: dict[str, object], keep: object
    ) -> None:
        account, created = history
        expected = [order for order in reversed(created) if keep(order)]  # type: ignore[operator]
        assert expected, "the fixture must have orders for every filter"
        pages = all_pages(repo, OrderQuery(account_id=account, limit=2, **filters))  # type: ignore[arg-type]
        assert ids([order for page in pages for order in page]) == ids(expected)
        assert all(len(page) <= 2 for page in pages)

    def test_a_full_last_page_may_be_followed_by_an_empty_one_never_by_a_repeat(
        self, repo: OrderRepository, history: tuple[str, list[Order]]
    ) -> None:
        account, created = history
        seen = [order for page in all_pages(repo, OrderQuery(account_id=account, limit=23)) for order in page]
        assert ids(seen) == ids(created[::-1])
