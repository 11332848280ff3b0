"""Shared benchmark plumbing: a private emulator with our stack, Lambda events of execution reports, call counting."""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from chalicelib.stack_outputs import settings_environment
from devstack.emulator import emulator_client, emulator_env, start_moto
from devstack.lambda_context import FunctionSpec
from devstack.processes import LOOPBACK, free_port
from devstack.provision import provision
from devstack.runner.events import kinesis_event

BENCH_SHARD_ID = "shardId-000000000000"


@contextmanager
def bench_stack(prefix: str) -> Iterator[dict[str, str]]:
    """A fresh moto server with our resources; the process environment points at it."""
    port = free_port()
    server = start_moto(port)
    endpoint = f"http://{LOOPBACK}:{port}"
    try:
        os.environ.update(emulator_env(endpoint))
        outputs = provision(
            endpoint,
            stack_name=prefix,
            parameters={"ResourcePrefix": prefix},
            cloudformation_client=emulator_client("cloudformation", endpoint),
        )
        os.environ.update(settings_environment(outputs))
        yield outputs
    finally:
        server.stop()


def execution_reports_event(
    reports: Sequence[Mapping[str, Any]], first_sequence: int, stream_arn: str, function: FunctionSpec
) -> dict[str, Any]:
    """The Lambda Kinesis event of these execution reports, one shard, as the feed bridge puts them (keyed by order)."""
    arrival = time.time()
    records = [
        {
            "SequenceNumber": str(first_sequence + index),
            "PartitionKey": report["client_order_id"],
            "Data": json.dumps(report).encode(),
            "ApproximateArrivalTimestamp": arrival,
        }
        for index, report in enumerate(reports)
    ]
    return kinesis_event(records, BENCH_SHARD_ID, stream_arn, function.region, function.role_arn)


class CallCounter:
    """Counts AWS API calls through botocore's event hooks on the given clients."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.items_written = 0

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call", self._count)

    def _count(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.calls[model.name] += 1
        if model.name == "BatchWriteItem":
            self.items_written += sum(len(requests) for requests in params.get("RequestItems", {}).values())
        elif model.name in {"PutItem", "UpdateItem", "DeleteItem"}:
            self.items_written += 1

    def reset(self) -> None:
        self.calls.clear()
        self.items_written = 0

    @property
    def writes(self) -> int:
        return sum(self.calls[name] for name in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"))

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.start


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
