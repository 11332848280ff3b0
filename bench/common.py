"""Shared benchmark plumbing: a private emulator with our stack, and API call counting."""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from devstack.emulator import emulator_client, emulator_env, start_moto
from devstack.processes import LOOPBACK, free_port
from devstack.provision import provision


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
        os.environ.update(
            {
                "ORDERS_TABLE_NAME": outputs["OrdersTableName"],
                "ORDERS_QUEUE_NAME": outputs["OrdersQueueName"],
                "EXECUTIONS_TABLE_NAME": outputs["ExecutionsTableName"],
                "EXECUTIONS_STREAM_NAME": outputs["ExecutionsStreamName"],
                "EXECUTIONS_FAILED_QUEUE_NAME": outputs["ExecutionsFailedQueueName"],
                "API_KEYS_TABLE_NAME": outputs["ApiKeysTableName"],
            }
        )
        yield outputs
    finally:
        server.stop()


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
