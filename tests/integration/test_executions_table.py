"""The executions repository and the batched order updates against a real emulator over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib import bootstrap
from chalicelib.adapters.executions_table import DynamoDBExecutionRepository
from chalicelib.adapters.orders_table import DynamoDBOrderRepository
from chalicelib.config import Settings
from chalicelib.domain.model import ExecType, ExecutionReport, Order, OrderStatus, OrderTerms, OrderType, Side
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.executions import apply_execution_reports

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


@pytest.fixture
def dependencies(adapter_stack: dict[str, str]) -> Dependencies:
    # The production wiring, pointed at this test's tables.
    settings = Settings(
        orders_table_name=adapter_stack["OrdersTableName"], executions_table_name=adapter_stack["ExecutionsTableName"]
    )
    return bootstrap.bootstrap(settings)


@pytest.fixture
def orders(dependencies: Dependencies) -> DynamoDBOrderRepository:
    assert isinstance(dependencies.orders, DynamoDBOrderRepository)
    return dependencies.orders


@pytest.fixture
def executions(dependencies: Dependencies) -> DynamoDBExecutionRepository:
    assert isinstance(dependencies.executions, DynamoDBExecutionRepository)
    return dependencies.executions


def report(order_id: str, n: int, exec_type: ExecType, qty: int, cum: int, avg: str | None) -> ExecutionReport:
    return ExecutionReport(
        exec_id=f"E-{order_id[:8]}-{n}",
        order_id=order_id,
        exchange_order_id="X42",
        exec_type=exec_type,
        last_qty=qty,
        last_price=Decimal(avg) if qty else None,
        cum_qty=cum,
        leaves_qty=0,
        avg_price=Decimal(avg) if avg else None,
        transact_time=T0 + timedelta(seconds=n),
        seq=n,
    )


def test_executions_are_stored_once_per_exec_id_and_listed_oldest_first(
    executions: DynamoDBExecutionRepository,
) -> None:
    order_id = "5b0f7a36-1d0e-4f57-9a7e-8f0c2a3b4c5d"
    reports = [report(order_id, n, ExecType.PARTIAL_FILL, 1, n, "10.25") for n in range(30, 0, -1)]
    executions.add_many(reports)
    executions.add_many(reports[:5])  # a redelivery
    listed = executions.list_for_order(order_id)
    assert [r.seq for r in listed] == list(range(1, 31))
    assert listed[0].avg_price == Decimal("10.25")
    assert listed[0].transact_time == T0 + timedelta(seconds=1)


def test_pages_of_an_orders_executions_walk_them_oldest_first_exactly_once(
    executions: DynamoDBExecutionRepository,
) -> None:
    # exec_ids sort against time here ("E-...-9" after "E-...-10"): the table's own order is not the page order.
    order_id = "7c1e2b44-3f5a-4d6b-8e9f-0a1b2c3d4e5f"
    executions.add_many([report(order_id, n, ExecType.PARTIAL_FILL, 1, n, "10.25") for n in range(1, 24)])
    seen: list[int] = []
    after = None
    while True:
        page = executions.page_for_order(order_id, after, limit=5)
        assert len(page.executions) <= 5
        seen.extend(r.seq for r in page.executions)
        if page.next is None:
            break
        after = page.next
    assert seen == list(range(1, 24))


def test_a_batch_updates_each_order_once_and_is_idempotent(
    dependencies: Dependencies, orders: DynamoDBOrderRepository
) -> None:
    stored = [
        orders.add(Order.create("acct-1", OrderTerms(OrderType.MARKET, Side.BUY, "US0378331005", 10, None), T0), T0)
        for _ in range(3)
    ]
    batch = []
    for order in stored:
        batch += [
            report(order.id, 1, ExecType.NEW, 0, 0, None),
            report(order.id, 2, ExecType.PARTIAL_FILL, 4, 4, "99.5"),
            report(order.id, 3, ExecType.FILL, 6, 10, "99.8"),
        ]
    result = apply_execution_reports(list(reversed(batch)), dependencies)
    assert result.updated_orders == 3
    for order in stored:
        read = orders.get(order.id)
        assert read is not None
        assert (read.status, read.filled_quantity, read.average_fill_price) == (
            OrderStatus.FILLED,
            10,
            Decimal("99.8"),
        )
        assert read.version == order.version + 1  # exactly one write
        # Settled by its executions: out of the sweep's index.
        assert order.id not in orders.pending_due_for_sweep(T0 + timedelta(days=1), 10_000)
    assert apply_execution_reports(batch, dependencies).updated_orders == 0
