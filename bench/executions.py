"""Executions path: reports applied per second and DynamoDB writes per report, batched vs naive."""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bench.common import CallCounter, Stopwatch, bench_stack, execution_reports_event, markdown_table
from chalicelib import bootstrap
from chalicelib.domain.model import Order, OrderTerms, OrderType, Side
from chalicelib.entrypoints.feed_message import parse_execution_report
from devstack.lambda_context import FunctionSpec


def venue_reports(order_ids: list[str], reports_per_order: int, rng: random.Random) -> list[dict[str, Any]]:
    """What a venue sends: new, partial fills, a final fill; interleaved across orders like a live feed."""
    seq = 0
    streams: list[list[dict[str, Any]]] = []
    now = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
    for order_id in order_ids:
        fills = reports_per_order - 1
        cum, notional, stream = 0, Decimal(0), []
        for n in range(reports_per_order):
            exec_type = "new" if n == 0 else ("fill" if n == fills else "partial_fill")
            qty = 0 if n == 0 else 1
            price = Decimal(rng.randint(1000, 1100)) / 100
            cum += qty
            notional += qty * price
            stream.append(
                {
                    "exec_id": f"E-{order_id}-{n}",
                    "client_order_id": order_id,
                    "exchange_order_id": f"X-{order_id}",
                    "exec_type": exec_type,
                    "last_qty": qty,
                    "last_price": str(price) if qty else None,
                    "cum_qty": cum,
                    "leaves_qty": fills - cum,
                    "avg_price": str((notional / cum).quantize(Decimal("0.0001"))) if cum else None,
                    "transact_time": (now + timedelta(milliseconds=n)).isoformat().replace("+00:00", "Z"),
                }
            )
        streams.append(stream)
    merged: list[dict[str, Any]] = []
    while any(streams):
        stream = rng.choice([s for s in streams if s])
        seq += 1
        merged.append({**stream.pop(0), "seq": seq})
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=100, help="Kinesis batch size of the handler")
    args = parser.parse_args(argv)

    with bench_stack("bench-exec") as outputs:
        # Imported only now: the app reads its settings (table names) once, at import.
        from app import app  # noqa: PLC0415

        handler = app.handler_map["apply_executions"]
        function = FunctionSpec("brokerage-orders-bench-apply_executions")
        dependencies = bootstrap.production()  # what app.py's handlers run with
        orders, executions = dependencies.orders, dependencies.executions
        counter = CallCounter()
        for client in bootstrap.aws_clients(dependencies):
            # The figures are DynamoDB calls: the queues' clients stay out of them.
            if client.meta.service_model.service_name == "dynamodb":
                counter.attach(client)

        rows = []
        rng = random.Random(7)
        for label, order_count in (("many executions, few orders", 10), ("many orders", args.reports // 4)):
            per_order = max(2, args.reports // order_count)
            for mode in ("batched handler", "naive: one read + write per report"):
                terms = OrderTerms(OrderType.MARKET, Side.BUY, "US0378331005", per_order - 1, None)
                now = datetime.now(UTC)
                created = [orders.add(Order.create("bench", terms, now), now) for _ in range(order_count)]
                reports = venue_reports([o.id for o in created], per_order, rng)
                counter.reset()
                with Stopwatch() as watch:
                    if mode.startswith("batched"):
                        for start in range(0, len(reports), args.batch_size):
                            batch = reports[start : start + args.batch_size]
                            event = execution_reports_event(batch, start + 1, outputs["ExecutionsStreamArn"], function)
                            response = handler(event, function.new_context())
                            assert response == {"batchItemFailures": []}, response
                    else:
                        for report in reports:
                            parsed = parse_execution_report(json.dumps(report).encode())
                            executions.add_many([parsed])
                            order = orders.get(parsed.order_id)
                            assert order is not None
                            updated = order.apply_executions([parsed], datetime.now(UTC))
                            if updated is not order:
                                orders.update(updated, sweep_after=None)
                final = orders.get_many([o.id for o in created])
                assert all(o.status.value == "filled" for o in final.values()), "not every order filled"
                rows.append(
                    [
                        label,
                        f"{order_count} orders x {per_order}",
                        mode,
                        f"{len(reports) / watch.seconds:,.0f}",
                        f"{counter.writes / len(reports):.3f}",
                        f"{counter.total / len(reports):.3f}",
                    ]
                )
        print(
            markdown_table(
                ["burst", "shape", "apply", "reports/s", "DynamoDB write calls/report", "DynamoDB calls/report"],
                rows,
            )
        )
        for i in range(0, len(rows), 2):
            ratio = float(rows[i][3].replace(",", "")) / float(rows[i + 1][3].replace(",", ""))
            print(f"\n{rows[i][0]}: batched / naive throughput = {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
