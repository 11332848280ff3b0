"""Create through the running stack's API by concurrent keep-alive clients, beside the floor of the same AWS calls.

Each client is a thread with a `requests.Session` of its own (keep-alive when
the server allows it); all clients wait at a barrier before their first
request, so at 64 clients the server meets 64 simultaneous connects. The
floor makes what every create must make, with our adapters, at the same
concurrency against the same emulator: the API key's GetItem, the count of
the account's open orders (a Query on the account-open-orders index, up to the
account's limit), the conditional PutItem of the order and the placement's
SendMessage (the account's limits come from a cache, as in the API). Its clients
have bootstrap's timeouts and retries and a connection pool per client thread
(botocore's default of 10 would make every call past the 10th thread open a
connection of its own), in FLOOR_PROCESSES processes: see floor_result.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import requests
from botocore.config import Config
from tqdm import tqdm

from bench.common import percentile
from bench.cpu_profile import CpuProfiler
from chalicelib import bootstrap
from chalicelib.adapters.api_keys import DynamoDBApiKeyRepository, api_key_record_class_for
from chalicelib.adapters.orders_table import DynamoDBOrderRepository, order_record_class_for
from chalicelib.adapters.queue import SqsOrdersQueue
from chalicelib.config import get_settings
from chalicelib.domain.model import Order, OrderTerms, OrderType, Side
from chalicelib.service.accounts import authenticate
from devstack.emulator import emulator_client
from devstack.processes import free_port
from devstack.stack import DEMO_LIMITS, DEMO_RATE_LIMIT, LocalStack, start_api

ORDER = {"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": 10, "limit_price": 101.25}
API_LABEL = "POST /orders via the stack's API"
FLOOR_LABEL = "floor: GetItem + Query + PutItem + SendMessage"
# The API runs 2 gunicorn workers: a floor in one Python process with 64
# client threads would measure that process's GIL as much as the emulator.
# Measured (`python -m bench.orders --scenarios create --levels 16,64
# --floor-processes 1` against the default 2), see the report of this change.
FLOOR_PROCESSES = 2

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


def drive(
    new_client: Callable[[], ClientCall],
    count: int,
    clients: int,
    label: str,
    all_ready: Callable[[], None] | None = None,
) -> LoadResult:
    """count calls shared by `clients` client threads, each with its own client made by new_client().

    all_ready, if given, runs once every client is built and before any starts
    (e.g. to wait for the other processes of the same measurement).
    """
    result = LoadResult(label, clients)
    lock = threading.Lock()
    remaining = [count]
    # Every client connects at the same moment: what a burst of users does to the listen backlog.
    barrier = threading.Barrier(clients + 1, action=all_ready)
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


def pooled(record_class: type, pool: int) -> type:
    """The same PynamoDB record class with a connection pool of `pool` (PynamoDB's default is 10)."""
    meta = type("Meta", (record_class.Meta,), {"max_pool_connections": pool})  # type: ignore[attr-defined]
    return type(f"Pooled{record_class.__name__}", (record_class,), {"Meta": meta})


def floor_client(queue_name: str, api_key: str, pool: int) -> Callable[[], ClientCall]:
    """What every create must do at least: read the caller's key, count its open orders, write the order, send it.

    Through our adapters with bootstrap's timeouts and retries (its builders'
    settings), shared by the client threads as the API process shares its
    clients between requests, but with a connection per thread (pool): the
    floor is the emulator's capacity, not a connection pool's.
    """
    settings = get_settings()
    # bootstrap's own settings for the clients it builds, plus a pool as large as the threads.
    connection = bootstrap.dynamodb_connection(settings)
    keys = DynamoDBApiKeyRepository(pooled(api_key_record_class_for(settings.api_keys_table_name, **connection), pool))
    orders = DynamoDBOrderRepository(pooled(order_record_class_for(settings.orders_table_name, **connection), pool))
    config = bootstrap.aws_client_config(settings).merge(Config(max_pool_connections=pool))
    queue = SqsOrdersQueue(queue_name, sqs_client=botocore.session.Session().create_client("sqs", config=config))
    # The demo account's limit, as the API's pre-trade check counts up to it.
    open_orders_limit = DEMO_LIMITS.max_open_orders or 0
    terms = OrderTerms(OrderType.LIMIT, Side.BUY, ORDER["instrument"], 10, None)  # type: ignore[arg-type]

    def create() -> None:
        account_id = authenticate(api_key, keys)
        orders.count_open(account_id, stop_at=open_orders_limit)
        now = datetime.now(UTC)
        order = orders.add(Order.create(account_id, terms, now), now + timedelta(minutes=1))
        queue.request_placement(order.id)

    return lambda: create


def _floor_share(queue_name: str, api_key: str, count: int, clients: int, start: Any, results: Any) -> None:
    """One process's share of the floor: its clients wait for every process's clients, then run."""
    result = drive(floor_client(queue_name, api_key, max(10, clients)), count, clients, "floor", start.wait)
    results.put(result)


def share_of(total: int, parts: int, index: int) -> int:
    """The index-th of `parts` near-equal shares of total (the first ones take the remainder)."""
    return total // parts + (index < total % parts)


def floor_result(queue_name: str, api_key: str, count: int, clients: int, processes: int) -> LoadResult:
    """The floor's calls by `clients` threads spread over `processes` processes started together.

    Spawned (not forked: this process holds threads and clients); each builds
    its clients, then all start at once; the rate is every call over the
    slowest process's time.
    """
    processes = max(1, min(processes, clients))
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(processes + 1), context.Queue()
    workers = [
        context.Process(
            target=_floor_share,
            args=(queue_name, api_key, share_of(count, processes, i), share_of(clients, processes, i), start, results),
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        start.wait(timeout=120)
        shares = [results.get(timeout=max(600.0, count)) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
                worker.join()
    merged = LoadResult(FLOOR_LABEL, clients, seconds=max(share.seconds for share in shares))
    for share in shares:
        merged.latencies += share.latencies
        merged.errors.update(share.errors)
    return merged


def bench_account(stack: LocalStack) -> str:
    """A key of a new account with the demo account's limits, for one path of one level.

    Every create counts its account's open orders (up to the account's
    limit, a million for the demo account), and the orders posted here stay
    open (pending: nothing polls these queues). With one account for the
    whole run, each level would count every earlier level's orders, and the
    floor, run after the API, the API's too: each path of each level starts
    from an empty book of its own instead, and ends with `count` open orders.
    """
    account_id = f"bench-{uuid.uuid4().hex[:8]}"
    api_key = stack.new_api_key(account_id)
    stack.set_limits(account_id, DEMO_LIMITS)
    stack.set_rate_limit(account_id, DEMO_RATE_LIMIT)
    return api_key


def measure_level(
    stack: LocalStack,
    clients: int,
    count: int,
    log: Any,
    profiler: CpuProfiler,
    floor_processes: int = FLOOR_PROCESSES,
) -> tuple[LoadResult, LoadResult]:
    """One concurrency level: the API, then the floor, each sending to an empty queue of its own.

    Own queues because moto's SQS slows down as a queue fills (STACK_NOTES):
    both paths start from an empty queue and fill it by the same count. The
    API is the stack's own command, started for this level with its queue.
    """
    sqs = emulator_client("sqs", stack.endpoint_url)
    api_queue, floor_queue = f"bench-api-{clients}", f"bench-floor-{clients}"
    for name in (api_queue, floor_queue):
        sqs.create_queue(QueueName=name)
    # Made before the windows open: their writes are not the level's.
    api_key, floor_key = bench_account(stack), bench_account(stack)
    port = free_port()
    with start_api(port, {**stack.env, "ORDERS_QUEUE_NAME": api_queue}, log) as level_api:
        # The window closes while the level's API still runs: a process gone by then loses its CPU from it.
        profiler.start(f"create API x{clients}", {level_api.pid: "api"})
        api = drive(api_client(f"http://127.0.0.1:{port}", api_key), count, clients, "API")
        profiler.stop(len(api.latencies))
    # The floor's worker processes are reaped inside the window: their CPU counts as bench's (cutime).
    profiler.start(f"create floor x{clients}")
    floor = floor_result(floor_queue, floor_key, count, clients, floor_processes)
    profiler.stop(len(floor.latencies))
    api.label, floor.label = API_LABEL, FLOOR_LABEL
    # Their orders stay pending in the table (no runner polls these queues; the sweep is held off by orders.py).
    for name in (api_queue, floor_queue):
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
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
