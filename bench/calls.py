"""AWS API calls per order (create, place, apply one execution) beside the design's minimum, and cost per million."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from chalice.test import Client

from bench.common import CallCounter, Stopwatch, bench_stack, markdown_table
from chalicelib import bootstrap
from chalicelib.service.accounts import create_api_key
from devstack.emulator import emulator_client
from devstack.lambda_context import FunctionSpec
from devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module
from devstack.runner import sqs_event

ORDER = {"type": "market", "side": "buy", "instrument": "US0378331005", "quantity": 10}

# The minimum this design needs per order, by step: the read of the caller's
# API key (the authorizer, on every request: no caching, so that a revoked
# key stops at once), the conditional write that commits the order and the
# message that asks for its placement; one read of the order's terms, the
# conditional write that claims it (the lease that lets a racing cancel know
# a placement may be on its way to the exchange) and one conditional write
# of the outcome; one execution stored and its order updated (batching shares
# these across a batch, which is why the measured figure can go below 2).
MINIMUM = {"create": 3, "place": 3, "apply one execution": 2}

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


def count_create(counter: CallCounter, app: Any, orders: int, api_key: str) -> tuple[int, float]:
    # chalice.test's gateway runs the authorizer too (a TOKEN event: the Authorization header).
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    with Client(app) as client:
        client.http.post("/orders", headers=headers, body=json.dumps(ORDER))  # warm
        counter.reset()
        with Stopwatch() as watch:
            for _ in range(orders):
                response = client.http.post("/orders", headers=headers, body=json.dumps(ORDER))
                assert response.status_code == 201
    return counter.total, watch.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=50)
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
        repository, queue = bootstrap.order_repository(), bootstrap.placement_queue()
        keys = bootstrap.api_key_repository()
        api_key = create_api_key("bench", None, keys).plaintext
        for client in (
            keys._records._get_connection().connection.client,
            repository._records._get_connection().connection.client,
            bootstrap.execution_repository()._records._get_connection().connection.client,
            queue.client,
            bootstrap.executions_failed_queue().client,
        ):
            counter.attach(client)

        rows: list[list[Any]] = []
        per_order: dict[str, dict[str, float]] = {}

        create_calls, create_seconds = count_create(counter, app, args.orders, api_key)
        per_order["create"] = {"calls": create_calls / args.orders, "seconds": create_seconds / args.orders}
        create_detail = dict(counter.calls)

        # Placement: receive the messages as Lambda's poller would (not our
        # calls), then hand them to the handler in batches of 10.
        sqs = emulator_client("sqs", os.environ["AWS_ENDPOINT_URL"])
        queue_url = outputs["OrdersQueueUrl"]
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while len(messages) < args.orders + 1 and time.monotonic() < deadline:
            messages += sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=300
            ).get("Messages", [])
        place = app.handler_map["place_orders"]
        function = FunctionSpec("bench-place_orders")
        counter.reset()
        with Stopwatch() as watch:
            for start in range(0, len(messages), 10):
                response = place(
                    sqs_event(messages[start : start + 10], outputs["OrdersQueueArn"], "us-east-1"),
                    function.new_context(),
                )
                assert response == {"batchItemFailures": []}, response
        per_order["place"] = {"calls": counter.total / len(messages), "seconds": watch.seconds / len(messages)}
        place_detail = dict(counter.calls)

        # One execution per order, applied in one Kinesis batch.
        order_ids = [json.loads(m["Body"])["order_id"] for m in messages]
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        records = [
            {
                "kinesis": {
                    "partitionKey": order_id,
                    "sequenceNumber": str(i + 1),
                    "data": base64.b64encode(
                        json.dumps(
                            {
                                "seq": i + 1,
                                "exec_id": f"E{i}",
                                "client_order_id": order_id,
                                "exchange_order_id": f"X{i}",
                                "exec_type": "fill",
                                "last_qty": 10,
                                "last_price": "10.00",
                                "cum_qty": 10,
                                "leaves_qty": 0,
                                "avg_price": "10.00",
                                "transact_time": now,
                            }
                        ).encode()
                    ).decode(),
                },
                "eventSource": "aws:kinesis",
                "eventID": f"shardId-000000000000:{i + 1}",
            }
            for i, order_id in enumerate(order_ids)
        ]
        apply = app.handler_map["apply_executions"]
        counter.reset()
        with Stopwatch() as watch:
            for start in range(0, len(records), 100):
                apply({"Records": records[start : start + 100]}, FunctionSpec("bench-apply").new_context())
        per_order["apply one execution"] = {
            "calls": counter.total / len(records),
            "seconds": watch.seconds / len(records),
        }
        apply_detail = dict(counter.calls)

        for step, detail in (("create", create_detail), ("place", place_detail), ("apply one execution", apply_detail)):
            rows.append(
                [
                    step,
                    f"{per_order[step]['calls']:.2f}",
                    MINIMUM[step],
                    f"{per_order[step]['calls'] / MINIMUM[step]:.2f}",
                    ", ".join(f"{name} {n}" for name, n in sorted(detail.items())),
                ]
            )
        print("\n### AWS API calls per order (moto server)\n")
        print(
            markdown_table(["step", "calls/order", "design minimum", "ratio", f"calls for {args.orders} orders"], rows)
        )

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
            per_order["create"]["seconds"]
            + max(per_order["place"]["seconds"], 0.5 / 10)  # the exchange's 0.5 s, shared by a batch of 10
            + reports_per_order * per_order["apply one execution"]["seconds"]
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
