"""Use cases of execution reports: apply a batch of them to their orders, list an order's executions."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from enum import Enum

from chalicelib.adapters.repository import ExecutionCursor, ExecutionPage, OrderRepository
from chalicelib.clock import Clock
from chalicelib.domain.model import ExecutionReport, Order, OrderNotFound
from chalicelib.domain.plausibility import implausible_reports
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.order_writes import write_with_retries
from chalicelib.service.reconciliation import log_correction

logger = logging.getLogger(__name__)


@dataclass
class ApplyResult:
    updated_orders: int = 0
    # Orders we had marked failed that these reports show the exchange holds.
    corrected_orders: int = 0
    unknown_orders: set[str] = field(default_factory=set)
    # Orders whose update failed (storage trouble, endless races): their
    # reports must be delivered again.
    failed_orders: dict[str, Exception] = field(default_factory=dict)
    # Reports that cannot be true of their order (chalicelib/domain/plausibility.py),
    # each with the reason: neither applied nor stored; the caller sets them aside.
    quarantined: dict[ExecutionReport, str] = field(default_factory=dict)


def apply_execution_reports(
    reports: Iterable[ExecutionReport], dependencies: Dependencies, executor: Executor | None = None
) -> ApplyResult:
    """Apply a batch of reports: one read for the batch, at most one conditional update per order.

    Idempotent and order-independent (see Order.apply_executions), so a
    redelivered, duplicated or reordered batch changes nothing more.
    Implausible reports are left out of both (result.quarantined); the
    plausible reports of the same order still apply.
    StorageUnavailable from the batch-wide calls propagates: retry the batch.
    """
    by_order: dict[str, list[ExecutionReport]] = defaultdict(list)
    for report in reports:
        by_order[report.order_id].append(report)
    result = ApplyResult()
    if not by_order:
        return result
    orders, clock = dependencies.orders, dependencies.clock

    current = orders.get_many(list(by_order))
    result.unknown_orders = set(by_order) - set(current)
    known = _plausible(current, by_order, result.quarantined)

    # Executions first: once an order shows a fill, its executions list has it.
    dependencies.executions.add_many([report for batch in known.values() for report in batch])

    def apply(order_id: str) -> Applied | Exception:
        try:
            return _apply_to_order(current[order_id], known[order_id], orders, clock)
        except Exception as exc:
            logger.warning("executions not applied", extra={"order_id": order_id, "error": repr(exc)})
            return exc

    order_ids = list(known)
    if executor is None or len(order_ids) == 1:
        outcomes = [apply(order_id) for order_id in order_ids]
    else:
        # Each order's update waits on its own round trip: overlap them.
        outcomes = list(executor.map(apply, order_ids))
    for order_id, outcome in zip(order_ids, outcomes, strict=True):
        if isinstance(outcome, Exception):
            result.failed_orders[order_id] = outcome
        elif outcome is not Applied.UNCHANGED:
            result.updated_orders += 1
            result.corrected_orders += outcome is Applied.CORRECTED
    return result


def _plausible(
    current: dict[str, Order], by_order: dict[str, list[ExecutionReport]], quarantined: dict[ExecutionReport, str]
) -> dict[str, list[ExecutionReport]]:
    """The known orders' plausible reports (orders left with none dropped); the others go into quarantined."""
    plausible: dict[str, list[ExecutionReport]] = {}
    for order_id, batch in by_order.items():
        order = current.get(order_id)
        if order is None:
            continue
        problems = implausible_reports(order, batch)
        quarantined.update(problems)
        if kept := [report for report in batch if report not in problems]:
            plausible[order_id] = kept
        for report, reason in problems.items():
            logger.error(
                "implausible execution report quarantined",
                extra={
                    "order_id": order_id,
                    "correlation_id": order.correlation_id,
                    "exec_id": report.exec_id,
                    "seq": report.seq,
                    "reason": reason,
                },
            )
    return plausible


class Applied(Enum):
    UNCHANGED = 0
    UPDATED = 1
    CORRECTED = 2  # it was failed: see CORRECTION_TRANSITIONS


def _apply_to_order(order: Order, batch: list[ExecutionReport], orders: OrderRepository, clock: Clock) -> Applied:
    updated, written = write_with_retries(orders, order, lambda current: current.apply_executions(batch, clock()))
    if written and updated.is_corrected_from(order):
        log_correction(order, updated, "execution reports")
        return Applied.CORRECTED
    if written:
        logger.info(
            "order updated by executions",
            extra={
                "order_id": order.id,
                "correlation_id": order.correlation_id,
                "status": updated.status.value,
                "filled_quantity": updated.filled_quantity,
            },
        )
    return Applied.UPDATED if written else Applied.UNCHANGED


def list_executions(
    order_id: str, account_id: str, dependencies: Dependencies, after: ExecutionCursor | None, limit: int
) -> ExecutionPage:
    """A page of the account's order's executions, oldest first; another account's order is not found."""
    order = dependencies.orders.get(order_id)
    if order is None or order.account_id != account_id:
        raise OrderNotFound(order_id)
    return dependencies.executions.page_for_order(order_id, after, limit)
