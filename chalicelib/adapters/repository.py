"""The order repository's interface and the errors every implementation raises."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from chalicelib.domain.model import ExecutionReport, Order, OrderStatus, Side


class StorageUnavailable(Exception):
    """The order store could not be reached or refused the request."""


class OrderAlreadyExists(Exception):
    """An order with this id is stored already."""


class ConcurrentModification(Exception):
    """Someone else wrote the order since it was read; read it again."""


@dataclass(frozen=True)
class OrderCursor:
    """Where the previous page ended: its last order's creation time and id."""

    created_at: datetime
    order_id: str


@dataclass(frozen=True)
class OrderQuery:
    """One page of an account's orders, newest first; None = no filter. Time bounds are exclusive."""

    account_id: str
    limit: int
    statuses: frozenset[OrderStatus] | None = None
    instrument: str | None = None
    side: Side | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    cursor: OrderCursor | None = None


@dataclass(frozen=True)
class ReconcileCursor:
    """Where the reconciler's last run stopped: a shard of its index, and the last order id checked in it."""

    shard: int
    after_id: str | None

    def to_text(self) -> str:
        return f"{self.shard}:{self.after_id or ''}"

    @classmethod
    def from_text(cls, text: str) -> ReconcileCursor | None:
        """The cursor to_text wrote, or None (start over) for anything else: a cursor only saves work."""
        shard, _, after = text.partition(":")
        return cls(int(shard), after or None) if shard.isdigit() else None


@dataclass(frozen=True)
class OrderPage:
    orders: list[Order]
    next: OrderCursor | None  # None: this was the last page


class OrderRepository(Protocol):
    def add(self, order: Order, sweep_after: datetime) -> Order:
        """Store a new pending order; raises OrderAlreadyExists if the id is taken."""

    def add_replacement(self, replacement: Order, original: Order, sweep_after: datetime) -> tuple[Order, Order]:
        """Store a new pending replacement and its original's change together, or neither (one transaction).

        Raises OrderAlreadyExists if the replacement's id is taken (checked
        first: a retry whose first write committed), else ConcurrentModification
        if the original was written since it was read. Returns both as stored.
        """

    def get(self, order_id: str) -> Order | None:
        """The order as last written (strongly consistent), or None."""

    def get_many(self, order_ids: list[str]) -> dict[str, Order]:
        """The stored orders among order_ids, by id (strongly consistent)."""

    def count_open(self, account_id: str, stop_at: int) -> int:
        """The account's open (not terminal) orders, counted up to stop_at; eventually consistent (a soft limit)."""

    def open_order_ids(self, account_id: str, after: str | None, limit: int) -> list[str]:
        """Up to limit ids of the account's open orders in id order, each greater than after (eventually consistent)."""

    def update(self, order: Order, sweep_after: datetime | None) -> Order:
        """Write a changed order if its version is still the stored one.

        sweep_after: when the order, if still pending, counts as stuck and is
        re-enqueued by the sweep. Ignored for orders that are not pending.
        """

    def pending_due_for_sweep(self, now: datetime, limit: int) -> list[str]:
        """Ids of orders still owed work (pending, pending_cancel) whose sweep_after has passed."""

    def list_for_account(self, query: OrderQuery) -> OrderPage:
        """A page of the account's orders, newest first (eventually consistent)."""

    def due_for_reconcile(
        self, cursor: ReconcileCursor | None, limit: int
    ) -> tuple[list[ReconcileCursor], ReconcileCursor]:
        """Up to limit open or failed orders from cursor on (eventually consistent), and where the next run starts.

        Each is given as the position right after it (its after_id is the
        order's id), so a run that stops early can save where it got to.
        """

    def stop_reconciling(self, order: Order) -> None:
        """A failed order past the reconciler's window leaves its index, unless written since it was read."""


class CursorStore(Protocol):
    """One named position kept between runs of a scheduled function."""

    def load(self) -> str | None:
        """The position saved last, or None if there is none."""

    def save(self, position: str) -> None:
        """Keep position for the next run."""


class ExecutionRepository(Protocol):
    def add_many(self, reports: list[ExecutionReport]) -> None:
        """Store reports; storing one again (same exec_id) changes nothing."""

    def list_for_order(self, order_id: str) -> list[ExecutionReport]:
        """The order's executions, oldest first."""

    def page_for_order(self, order_id: str, after: ExecutionCursor | None, limit: int) -> ExecutionPage:
        """Up to limit of the order's executions, oldest first, from right after `after` (strongly consistent)."""


@dataclass(frozen=True, order=True)
class ExecutionCursor:
    """Where a page of executions ended: its last report's place in their order (time, feed seq, exec_id)."""

    transact_time: datetime
    seq: int
    exec_id: str

    @classmethod
    def of(cls, report: ExecutionReport) -> ExecutionCursor:
        return cls(report.transact_time, report.seq, report.exec_id)


@dataclass(frozen=True)
class ExecutionPage:
    executions: list[ExecutionReport]
    next: ExecutionCursor | None  # None: no executions after these (yet)


def execution_page(reports: list[ExecutionReport], after: ExecutionCursor | None, limit: int) -> ExecutionPage:
    """One page of an order's reports, oldest first: the ones strictly after `after`, at most limit of them.

    Every position is unique (exec_id is the table's key), so paging on from
    the last report of a page neither repeats nor skips one stored meanwhile
    after it.
    """
    ordered = sorted(reports, key=ExecutionCursor.of)
    remaining = ordered if after is None else [report for report in ordered if ExecutionCursor.of(report) > after]
    page = remaining[:limit]
    return ExecutionPage(page, ExecutionCursor.of(page[-1]) if len(remaining) > limit else None)
