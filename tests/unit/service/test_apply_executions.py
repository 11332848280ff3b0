"""The batch service of execution reports against in-memory fakes: one write per order, unknown orders named."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from chalicelib.domain.model import ExecType, ExecutionReport, OrderStatus
from chalicelib.service.executions import ApplyResult, apply_execution_reports
from tests.unit.fakes import FakeExecutions, FakeRepository, Fakes
from tests.unit.venue import T0, execution_history, market_order

pytestmark = pytest.mark.unit


def apply(repo: FakeRepository, executions: FakeExecutions, reports: list[ExecutionReport]) -> ApplyResult:
    return apply_execution_reports(reports, Fakes(orders=repo, executions=executions, clock=lambda: T0).dependencies())


def test_the_batch_service_writes_each_order_once_and_reports_unknown_orders() -> None:
    repo, executions = FakeRepository(), FakeExecutions()
    a, b = market_order(10), market_order(20)
    repo.add(a, T0)
    repo.add(b, T0)
    writes_before = repo.writes
    reports = execution_history(a, [(4, Decimal("1")), (6, Decimal("2"))], ExecType.FILL) + execution_history(
        b, [(5, Decimal("3"))], ExecType.CANCELED
    )
    stranger = dataclasses.replace(reports[0], order_id="not-ours", exec_id="E99")
    result = apply(repo, executions, [*reports, stranger, *reports])
    assert result.updated_orders == 2
    assert result.unknown_orders == {"not-ours"}
    assert repo.writes - writes_before == 2
    assert repo.orders[a.id].status is OrderStatus.FILLED
    assert repo.orders[b.id].status is OrderStatus.CANCELED
    assert [r.exec_type for r in executions.list_for_order(a.id)] == [
        ExecType.NEW,
        ExecType.PARTIAL_FILL,
        ExecType.FILL,
    ]
    assert ("not-ours", "E99") not in executions.stored

    again = apply(repo, executions, reports)
    assert again.updated_orders == 0  # nothing new: no write at all
    assert repo.writes - writes_before == 2


def test_one_orders_storage_failure_does_not_fail_the_others() -> None:
    repo, executions = FakeRepository(), FakeExecutions()
    a, b = market_order(10), market_order(10)
    repo.add(a, T0)
    repo.add(b, T0)
    original_update = repo.update

    def flaky_update(order, sweep_after):
        if order.id == a.id:
            raise RuntimeError("throttled")
        return original_update(order, sweep_after)

    repo.update = flaky_update  # type: ignore[method-assign]
    reports = execution_history(a, [(10, Decimal("1"))], ExecType.FILL) + execution_history(
        b, [(10, Decimal("1"))], ExecType.FILL
    )
    result = apply(repo, executions, reports)
    assert set(result.failed_orders) == {a.id}
    assert repo.orders[b.id].status is OrderStatus.FILLED


def test_reports_for_an_order_we_had_failed_correct_it_and_count_the_correction(
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo, executions = FakeRepository(), FakeExecutions()
    stored = repo.add(market_order(10), T0)
    failed = repo.update(stored.failed("exchange unavailable after 3 attempts", T0), None)
    fills = execution_history(failed, [(4, Decimal("7"))], ExecType.CANCELED)
    with caplog.at_level("ERROR"):
        result = apply(repo, executions, fills)
    assert (result.updated_orders, result.corrected_orders) == (1, 1)
    assert (repo.orders[failed.id].status, repo.orders[failed.id].filled_quantity) == (OrderStatus.CANCELED, 4)
    assert any(r.getMessage() == "failed order corrected to the exchange's state" for r in caplog.records)
    assert apply(repo, executions, fills).corrected_orders == 0  # once
