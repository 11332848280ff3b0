"""AWS API calls per order (create, place, apply one execution) beside the design's minimum, their mean durations,
and cost per million.

The per-step figures also go to build/bench/calls.json (bench.capacity's
MEASURED_PATH, in the shape it reads), so `python -m bench.capacity` models
from the latest run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalice.test import Client

from bench.capacity import MEASURED_PATH
from bench.common import CallCounter, Stopwatch, bench_stack, execution_reports_event, markdown_table
from chalicelib import bootstrap
from chalicelib.service.accounts import create_api_key
from devstack.emulator import emulator_client
from devstack.lambda_context import FunctionSpec
from devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module
from devstack.runner.events import sqs_event
from devstack.stack import DEMO_LIMITS

ORDER = {"type": "market", "side": "buy", "instrument": "US0378331005", "quantity": 10}

# The minimum this design needs per order, by step: the read of the caller's
# API key (the authorizer, on every request: no caching, so that a revoked
# key stops at once), the count of the account's open orders for its limit
# (a Query; its limits are read once per 30 s), the conditional write that
# commits the order and the message that asks for its placement; one read of the order's terms, the
# conditional write that claims it (the lease that lets a racing cancel know
# a placement may be on its way to the exchange) and one conditional write
# of the outcome; one execution stored and its order updated (batching shares
# these across a batch, which is why the measured figure can go below 2).
MINIMUM = {"create": 4, "place": 3, "apply one execution": 2}

# us-east-1 list prices (USD) as published on the AWS pricing pages for
# API Gateway REST, Lambda (x86), DynamoDB on-demand, SQS standard and Kinesis
# on-demand, as known when this benchmark was written (2026-11); re-check
# before quoting. Per unit, not per million.
PRICES = {
    "api_gateway_request": 3.50 / 1e6,
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second": 0.0000166667,
    "dynamodb_write_unit": 0.625 / 1e6,
    "dynamodb_read_unit": 0.125 / 1e6,
    "sqs_request": 0.40 / 1e6,
    "kinesis_put_payload_unit": 0.014 / 1e6,
}
LAMBDA_MEMORY_GB = 0.5  # lambda_memory_size in .chalice/config.json
DYNAMODB_WRITES = {"PutItem", "UpdateItem", "BatchWriteItem", "DeleteItem"}
DYNAMODB_READS = {"GetItem", "BatchGetItem", "Query"}


@dataclass(frozen=True)
class StepFigures:
    """One step measured over every order: AWS calls and seconds per order, and the calls by API operation."""

    calls: float
    seconds: float
    detail: dict[str, int]
    mean_ms: dict[str, float]  # by API operation, retries included


def measured(counter: CallCounter, watch: Stopwatch, orders: int) -> StepFigures:
    means = {name: counter.mean_ms(name) for name in counter.calls}
    return StepFigures(counter.total / orders, watch.seconds / orders, dict(counter.calls), means)


def counted_clients(counter: CallCounter) -> str:
    """Count the calls of every AWS client the app's handlers use; returns a new API key of the account `bench`."""
    dependencies = bootstrap.production()  # what app.py's handlers run with
    api_key = create_api_key("bench", None, dependencies.api_keys).plaintext
    # bench.reconcile builds a book of thousands of open orders in this account: the local stack's
    # demo limits (a new account's defaults would stop it at DEFAULT_MAX_OPEN_ORDERS).
    bootstrap.account_limits_repository().set("bench", DEMO_LIMITS)
    for client in bootstrap.aws_clients(dependencies):
        counter.attach(client)
    return api_key


def measure_create(counter: CallCounter, app: Any, orders: int, api_key: str) -> StepFigures:
    # chalice.test's gateway runs the authorizer too (a TOKEN event: the Authorization header).
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    with Client(app) as client:
        client.http.post("/orders", headers=headers, body=json.dumps(ORDER))  # warm
        counter.reset()
        with Stopwatch() as watch:
            for _ in range(orders):
                response = client.http.post("/orders", headers=headers, body=json.dumps(ORDER))
                assert response.status_code == 201
    return measured(counter, watch, orders)


def receive_placements(queue_url: str, count: int) -> list[dict[str, Any]]:
    """Receive the placement messages as Lambda's poller would (calls not counted: they are not ours)."""
    sqs = emulator_client("sqs", os.environ["AWS_ENDPOINT_URL"])
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while len(messages) < count and time.monotonic() < deadline:
        messages += sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=300
        ).get("Messages", [])
    return messages


def measure_place(counter: CallCounter, app: Any, messages: list[dict[str, Any]], queue_arn: str) -> StepFigures:
    """Hand the placement messages to the handler in batches of 10, as the SQS mapping does."""
    place = app.handler_map["place_orders"]
    function = FunctionSpec("bench-place_orders")
    counter.reset()
    with Stopwatch() as watch:
        for start in range(0, len(messages), 10):
            response = place(sqs_event(messages[start : start + 10], queue_arn, "us-east-1"), function.new_context())
            assert response == {"batchItemFailures": []}, response
    return measured(counter, watch, len(messages))


def fill_reports(exchange_order_ids: dict[str, str | None]) -> list[dict[str, Any]]:
    """One execution report per order: the whole quantity filled at once, under the venue id placement recorded.

    The consumer quarantines a report whose exchange order id is not the
    order's (docs/execution-feed.md), so a made-up id would measure the
    quarantine, not the apply.
    """
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    quantity = ORDER["quantity"]
    return [
        {
            "seq": i + 1,
            "exec_id": f"E{i}",
            "client_order_id": order_id,
            "exchange_order_id": exchange_order_id or f"X{i}",
            "exec_type": "fill",
            "last_qty": quantity,
            "last_price": "10.00",
            "cum_qty": quantity,
            "leaves_qty": 0,
            "avg_price": "10.00",
            "transact_time": now,
        }
        for i, (order_id, exchange_order_id) in enumerate(exchange_order_ids.items())
    ]


def measure_apply(counter: CallCounter, app: Any, order_ids: list[str], stream_arn: str) -> StepFigures:
    """One execution per order, applied in Kinesis batches of 100."""
    # Read before the clock starts: the venue ids placement recorded.
    placed = bootstrap.order_repository().get_many(order_ids)
    reports = fill_reports({order_id: placed[order_id].exchange_order_id for order_id in order_ids})
    apply = app.handler_map["apply_executions"]
    function = FunctionSpec("bench-apply")
    # Built before the clock starts: Lambda receives its events ready-made.
    events = [
        execution_reports_event(reports[start : start + 100], start + 1, stream_arn, function)
        for start in range(0, len(reports), 100)
    ]
    counter.reset()
    with Stopwatch() as watch:
        for event in events:
            apply(event, function.new_context())
    return measured(counter, watch, len(reports))


def print_calls(per_order: dict[str, StepFigures], orders: int) -> None:
    rows = [
        [
            step,
            f"{figures.calls:.2f}",
            MINIMUM[step],
            f"{figures.calls / MINIMUM[step]:.2f}",
            ", ".join(f"{name} {n}" for name, n in sorted(figures.detail.items())),
        ]
        for step, figures in per_order.items()
    ]
    print("\n### AWS API calls per order (moto server)\n")
    print(markdown_table(["step", "calls/order", "design minimum", "ratio", f"calls for {orders} orders"], rows))
    # Durations for the capacity model (docs/SCALING.md). Create and apply make their calls one after another;
    # place runs a batch's 10 records on 10 threads, so its calls meet each other on the emulator.
    durations = [
        [step, name, figures.detail[name], f"{figures.mean_ms[name]:.1f}"]
        for step, figures in per_order.items()
        for name in sorted(figures.detail)
    ]
    print("\n### Mean duration per AWS call, by step (moto server; place: 10 at once)\n")
    print(markdown_table(["step", "call", "calls", "mean ms"], durations))


def print_costs(per_order: dict[str, StepFigures]) -> None:
    # Cost per million orders: each order is one API request (two Lambda
    # invocations: the authorizer, uncached, and the handler), one
    # placement message (send + receive + delete by the poller), its
    # share of the Lambda invocations (batches of 10 and 100), the
    # DynamoDB units (items are under 1 KB: one unit per item written or
    # read) and ~3 execution reports on Kinesis (one payload unit each).
    reports_per_order = 3
    # Worst case for batching: every report of an order lands in a
    # different batch, so each report costs its execution item and an
    # order update (2 write units) and a share of a batch read.
    dynamodb_writes = 2 + reports_per_order * 2
    dynamodb_reads = 1 + 1 + reports_per_order  # the API key (strongly consistent), the order, the batches
    lambda_seconds = (
        per_order["create"].seconds
        + max(per_order["place"].seconds, 0.5 / 10)  # the exchange's 0.5 s, shared by a batch of 10
        + reports_per_order * per_order["apply one execution"].seconds
    )
    costs = {
        "API Gateway": PRICES["api_gateway_request"],
        "Lambda requests": PRICES["lambda_request"] * (2 + 1 / 10 + reports_per_order / 100),
        "Lambda duration": PRICES["lambda_gb_second"] * LAMBDA_MEMORY_GB * lambda_seconds,
        "DynamoDB": PRICES["dynamodb_write_unit"] * dynamodb_writes + PRICES["dynamodb_read_unit"] * dynamodb_reads,
        "SQS": PRICES["sqs_request"] * (1 + 2 / 10 + 0.1),
        "Kinesis": PRICES["kinesis_put_payload_unit"] * reports_per_order,
    }
    print("\n### Cost per million orders on AWS (us-east-1 list prices, see bench/calls.py)\n")
    print(
        markdown_table(
            ["service", "USD per million orders"],
            [[name, f"{value * 1e6:.2f}"] for name, value in costs.items()]
            + [["total", f"{sum(costs.values()) * 1e6:.2f}"]],
        )
    )


def write_measured(per_order: dict[str, StepFigures], path: Path) -> None:
    """The steps' figures as JSON: {step: {"calls", "seconds", "detail", "mean_ms"}}, the keys bench.capacity reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({step: asdict(figures) for step, figures in per_order.items()}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--json", type=Path, default=MEASURED_PATH, help="where the per-step figures are written")
    args = parser.parse_args(argv)

    exchange_port, feed_port = free_port(), free_port()
    with (
        bench_stack("bench-calls") as outputs,
        ManagedProcess(
            "exchange",
            python_module("devstack.exchange_sim", "--port", str(exchange_port), "--feed-port", str(feed_port)),
            env={**os.environ, "EXCHANGE_FAILURE_RATE": "0", "EXCHANGE_LATENCY_S": "0"},
            ready_url=f"http://{LOOPBACK}:{exchange_port}/health",
        ),
    ):
        os.environ["EXCHANGE_URL"] = f"http://{LOOPBACK}:{exchange_port}"
        from app import app  # noqa: PLC0415 - reads its settings at import, after the env is set

        counter = CallCounter()
        api_key = counted_clients(counter)
        per_order = {"create": measure_create(counter, app, args.orders, api_key)}
        # One more than measured: the warm-up request's order is queued too.
        messages = receive_placements(outputs["OrdersQueueUrl"], args.orders + 1)
        per_order["place"] = measure_place(counter, app, messages, outputs["OrdersQueueArn"])
        order_ids = [json.loads(m["Body"])["order_id"] for m in messages]
        per_order["apply one execution"] = measure_apply(counter, app, order_ids, outputs["ExecutionsStreamArn"])
        print_calls(per_order, args.orders)
        print_costs(per_order)
        write_measured(per_order, args.json)
        print(f"\nper-step figures: {args.json} (read by `python -m bench.capacity`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
