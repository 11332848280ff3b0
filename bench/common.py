"""Shared benchmark plumbing: a private emulator with our stack, Lambda events of execution reports, call counting
and timing, percentiles, tables."""

from __future__ import annotations

import collections
import json
import os
import threading
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
    """Counts AWS API calls, and the seconds each takes, through botocore's event hooks on the given clients."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.seconds: collections.Counter[str] = collections.Counter()
        # Clients are shared by threads: the counters are updated under a lock.
        self._lock = threading.Lock()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call", self._count)
        client.meta.events.register("after-call", self._timed)

    def _count(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        # The request context travels from before-call to after-call: the start time rides in it.
        context["bench_started"] = time.perf_counter()
        with self._lock:
            self.calls[model.name] += 1

    def _timed(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        started = context.get("bench_started")
        if started is not None:
            with self._lock:
                self.seconds[model.name] += time.perf_counter() - started

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.seconds.clear()

    def mean_ms(self, name: str) -> float:
        """Mean milliseconds of one call of this operation, retries included (0 if none was made)."""
        return 1000 * self.seconds[name] / self.calls[name] if self.calls[name] else 0.0

    @property
    def writes(self) -> int:
        return sum(self.calls[name] for name in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"))

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


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
