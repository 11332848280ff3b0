"""Execution reports as a venue sends them for one order (new, fills, the ending), for the unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from chalicelib.domain.model import ExecType, ExecutionReport, Order, OrderTerms, OrderType, Side

T0 = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)


def market_order(quantity: int = 100) -> Order:
    return Order.create("acct-1", OrderTerms(OrderType.MARKET, Side.BUY, "US0378331005", quantity, None), T0)


def execution_history(order: Order, fills: list[tuple[int, Decimal]], ending: ExecType) -> list[ExecutionReport]:
    """The reports a venue sends, in order: new, fills, and the ending (fill, canceled, expired or replaced)."""
    reports: list[ExecutionReport] = []
    cum, notional = 0, Decimal(0)

    def report(exec_type: ExecType, qty: int, price: Decimal | None) -> ExecutionReport:
        n = len(reports) + 1
        return ExecutionReport(
            exec_id=f"E{n}",
            order_id=order.id,
            exchange_order_id="X1",
            exec_type=exec_type,
            last_qty=qty,
            last_price=price,
            cum_qty=cum,
            leaves_qty=0
            if exec_type in (ExecType.FILL, ExecType.CANCELED, ExecType.EXPIRED, ExecType.REPLACED)
            else order.terms.quantity - cum,
            avg_price=(notional / cum).quantize(Decimal("0.0001")) if cum else None,
            transact_time=T0 + timedelta(seconds=n),
            seq=n,
        )

    reports.append(report(ExecType.NEW, 0, None))
    for i, (qty, price) in enumerate(fills):
        cum += qty
        notional += qty * price
        last = i == len(fills) - 1 and ending is ExecType.FILL
        reports.append(report(ExecType.FILL if last else ExecType.PARTIAL_FILL, qty, price))
    if ending is not ExecType.FILL:
        reports.append(report(ending, 0, None))
    return reports
