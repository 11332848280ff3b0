"""Create through the running stack's API by concurrent keep-alive clients, beside the floor of the same AWS calls.

Each client is a thread with a `requests.Session` of its own (keep-alive when
the server allows it); all clients wait at a barrier before their first
request, so at 64 clients the server meets 64 simultaneous connects. The
floor makes what every create must make, with our adapters, at the same
concurrency against the same emulator: the API key's GetItem, the
conditional PutItem of the order and the placement's SendMessage.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import requests
from tqdm import tqdm

from bench.common import percentile
from chalicelib import bootstrap
from chalicelib.adapters.queue import SqsOrdersQueue
from chalicelib.domain.model import Order, OrderTerms, OrderType, Side
from chalicelib.service.accounts import authenticate
from devstack.emulator import emulator_client
from devstack.processes import free_port
from devstack.stack import LocalStack, start_api

ORDER = {"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": 10, "limit_price": 101.25}
API_LABEL = "POST /orders via the stack's API"
FLOOR_LABEL = "floor: GetItem + PutItem + SendMessage"

# One call of one client: raises on anything but success.
ClientCall = Callable[[], None]


@dataclass
class LoadResult:
    """One path at one concurrency: latencies of the calls that succeeded, and what went wrong with the others."""

    label: str
    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def resets(self) -> int:
        return self.errors["connection reset"]

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


def error_kind(exc: BaseException) -> str:
    """A short name for what failed: connection resets are counted apart (the 64-connect target is about them)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionResetError) or "reset by peer" in str(seen).lower():
            return "connection reset"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, requests.Timeout):
        return "timeout"
    if isinstance(exc, requests.ConnectionError):
        return "connection error"
    return type(exc).__name__


def drive(new_client: Callable[[], ClientCall], count: int, clients: int, label: str) -> LoadResult:
    """count calls shared by `clients` client threads, each with its own client made by new_client()."""
    result = LoadResult(label, clients)
    lock = threading.Lock()
    remaining = [count]
    # Every client connects at the same moment: what a burst of users does to the listen backlog.
    barrier = threading.Barrier(clients + 1)
    progress = tqdm(total=count, desc=f"{label} x{clients}", unit="req", file=sys.stderr, leave=False)

    def take_one() -> bool:
        with lock:
            remaining[0] -= 1
            return remaining[0] >= 0

    def client_thread() -> None:
        call = new_client()
        barrier.wait()
        while take_one():
            started = time.perf_counter()
            try:
                call()
            except Exception as exc:
                with lock:
                    result.errors[error_kind(exc)] += 1
            else:
                with lock:
                    result.latencies.append(time.perf_counter() - started)
            progress.update()

    threads = [threading.Thread(target=client_thread, name=f"client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    progress.close()
    return result


class UnexpectedStatus(Exception):
    """The API answered, but not 201."""


def api_client(api_url: str, api_key: str) -> Callable[[], ClientCall]:
    def new_client() -> ClientCall:
        session = requests.Session()  # not thread-safe: one per client thread
        session.headers["Authorization"] = f"Bearer {api_key}"

        def post() -> None:
            response = session.post(f"{api_url}/orders", json=ORDER, timeout=30)
            if response.status_code != 201:
                raise UnexpectedStatus(f"HTTP {response.status_code}")

        return post

    return new_client


def floor_client(queue_name: str, api_key: str) -> Callable[[], ClientCall]:
    """What every create must do at least: read the caller's key, write the order, send its message.

    Through the adapters as bootstrap builds them for the API's handler (the
    same clients and connection pools), shared by the client threads as the
    API process shares them between its requests.
    """
    keys, orders = bootstrap.api_key_repository(), bootstrap.order_repository()
    queue = SqsOrdersQueue(queue_name, sqs_client=boto3.session.Session().client("sqs"))
    terms = OrderTerms(OrderType.LIMIT, Side.BUY, ORDER["instrument"], 10, None)  # type: ignore[arg-type]

    def create() -> None:
        account_id = authenticate(api_key, keys)
        now = datetime.now(UTC)
        order = orders.add(Order.create(account_id, terms, now), now + timedelta(minutes=1))
        queue.request_placement(order.id)

    return lambda: create


def measure_level(stack: LocalStack, clients: int, count: int, log: Any) -> tuple[LoadResult, LoadResult]:
    """One concurrency level: the API, then the floor, each sending to an empty queue of its own.

    Own queues because moto's SQS slows down as a queue fills (STACK_NOTES):
    both paths start from an empty queue and fill it by the same count. The
    API is the stack's own command, started for this level with its queue.
    """
    sqs = emulator_client("sqs", stack.endpoint_url)
    api_queue, floor_queue = f"bench-api-{clients}", f"bench-floor-{clients}"
    for name in (api_queue, floor_queue):
        sqs.create_queue(QueueName=name)
    port = free_port()
    with start_api(port, {**stack.env, "ORDERS_QUEUE_NAME": api_queue}, log):
        api = drive(api_client(f"http://127.0.0.1:{port}", stack.api_key), count, clients, "API")
    floor = drive(floor_client(floor_queue, stack.api_key), count, clients, "floor")
    api.label, floor.label = API_LABEL, FLOOR_LABEL
    return api, floor


def create_rows(results: list[tuple[LoadResult, LoadResult]]) -> list[list[Any]]:
    rows = []
    for api, floor in results:
        for result in (api, floor):
            rows.append(
                [
                    result.label,
                    result.clients,
                    f"{result.rate:,.0f}",
                    f"{result.ms(50):.1f}",
                    f"{result.ms(95):.1f}",
                    f"{result.ms(99):.1f}",
                    f"{result.ms(99) / result.ms(50):.1f}" if result.latencies else "-",
                    sum(result.errors.values()),
                    result.resets,
                ]
            )
    return rows


CREATE_HEADERS = ["path", "clients", "orders/s", "p50 ms", "p95 ms", "p99 ms", "p99/p50", "errors", "resets"]


def create_summary(results: list[tuple[LoadResult, LoadResult]]) -> list[str]:
    """One line per level: the ratios the targets are about, and what failed."""
    lines = []
    for api, floor in results:
        ratio = api.rate / floor.rate if floor.rate else float("nan")
        spread = api.ms(99) / api.ms(50) if api.latencies else float("nan")
        failures = ", ".join(f"{kind} {n}" for kind, n in api.errors.items()) or "none"
        lines.append(
            f"- {api.clients} clients: API / floor = {ratio:.2f} (target >= 0.8 at 16), "
            f"API p99/p50 = {spread:.1f} (target <= 5 at 16), API failures: {failures}"
        )
    return lines
