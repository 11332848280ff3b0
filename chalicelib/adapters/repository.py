"""The order repository's interface and the errors every implementation raises."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from chalicelib.domain.model import ExecutionReport, Order


class StorageUnavailable(Exception):
    """The order store could not be reached or refused the request."""


class OrderAlreadyExists(Exception):
    """An order with this id is stored already."""


class ConcurrentModification(Exception):
    """Someone else wrote the order since it was read; read it again."""


class OrderRepository(Protocol):
    def add(self, order: Order, sweep_after: datetime) -> Order:
        """Store a new pending order; raises OrderAlreadyExists if the id is taken."""

    def get(self, order_id: str) -> Order | None:
        """The order as last written (strongly consistent), or None."""

    def get_many(self, order_ids: list[str]) -> dict[str, Order]:
        """The stored orders among order_ids, by id (strongly consistent)."""

    def update(self, order: Order, sweep_after: datetime | None) -> Order:
        """Write a changed order if its version is still the stored one.

        sweep_after: when the order, if still pending, counts as stuck and is
        re-enqueued by the sweep. Ignored for orders that are not pending.
        """

    def pending_due_for_sweep(self, now: datetime, limit: int) -> list[str]:
        """Ids of pending orders whose sweep_after has passed, oldest first per shard."""


class ExecutionRepository(Protocol):
    def add_many(self, reports: list[ExecutionReport]) -> None:
        """Store reports; storing one again (same exec_id) changes nothing."""

    def list_for_order(self, order_id: str) -> list[ExecutionReport]:
        """The order's executions, oldest first."""
