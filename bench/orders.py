"""Order create and placement: HTTP throughput and latency beside direct-call floors, placement beside its limit."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

from bench.common import Stopwatch, markdown_table
from chalicelib import bootstrap
from chalicelib.adapters.queue import SqsOrdersQueue
from chalicelib.domain.model import Order, OrderTerms, OrderType, Side
from chalicelib.service.accounts import authenticate
from devstack.emulator import emulator_client
from devstack.processes import free_port
from devstack.stack import local_stack, start_api, start_runner

ORDER = {"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": 10, "limit_price": 101.25}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run_concurrently(call: Any, count: int, concurrency: int, label: str) -> tuple[float, list[float]]:
    """Seconds for count calls at the given concurrency, and each call's latency."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        with lock:
            latencies.append(elapsed)

    with (
        Stopwatch() as watch,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
        tqdm(total=count, desc=f"{label} x{concurrency}", unit="req", file=sys.stderr, leave=False) as bar,
    ):
        for _ in pool.map(one, range(count)):
            bar.update()
    return watch.seconds, latencies


def latency_row(label: str, concurrency: int, seconds: float, latencies: list[float]) -> list[Any]:
    return [
        label,
        concurrency,
        f"{len(latencies) / seconds:,.0f}",
        f"{percentile(latencies, 50) * 1000:.1f}",
        f"{percentile(latencies, 95) * 1000:.1f}",
        f"{percentile(latencies, 99) * 1000:.1f}",
    ]


def measure_create_level(
    stack: Any, level: int, count: int, samples: dict[tuple[str, int], list[float]]
) -> list[list[Any]]:
    """One concurrency level: the API and the floor, each with an empty queue of its own.

    Own queues because moto's SQS slows down as a queue fills (shared STACK_NOTES).
    """
    sqs = emulator_client("sqs", stack.endpoint_url)
    api_queue, floor_queue = f"bench-api-{level}", f"bench-floor-{level}"
    for name in (api_queue, floor_queue):
        sqs.create_queue(QueueName=name)
    repository, keys = bootstrap.order_repository(), bootstrap.api_key_repository()
    queue = SqsOrdersQueue(floor_queue, sqs_client=sqs)
    terms = OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", 10, None)
    port = free_port()
    sessions = threading.local()  # requests.Session is not thread-safe: one per client thread

    def post() -> None:
        if not hasattr(sessions, "http"):
            sessions.http = requests.Session()
            sessions.http.headers["Authorization"] = f"Bearer {stack.api_key}"
        response = sessions.http.post(f"http://127.0.0.1:{port}/orders", json=ORDER, timeout=30)
        assert response.status_code == 201, response.text

    def floor() -> None:
        # What every create must do at least: read the caller's key, write the order, send its message.
        account_id = authenticate(stack.api_key, keys)
        now = datetime.now(UTC)
        order = repository.add(Order.create(account_id, terms, now), now + timedelta(minutes=1))
        queue.request_placement(order.id)

    with start_api(port, {**stack.env, "ORDERS_QUEUE_NAME": api_queue}, subprocess.DEVNULL):
        rows = []
        paths = (("POST /orders via chalice local", post), ("floor: GetItem + PutItem + SendMessage", floor))
        for label, call in paths:
            seconds, latencies = run_concurrently(call, count, level, label)
            rows.append(latency_row(label, level, seconds, latencies))
            samples[(label, level)] = latencies
    return rows


def plot_latencies(samples: dict[tuple[str, int], list[float]], path: Path) -> None:
    """Box plots of the create latencies, API beside floor, per concurrency level."""
    import matplotlib  # noqa: PLC0415 - only this plot needs it, and it is slow to import

    matplotlib.use("Agg")  # no display here
    from matplotlib import pyplot  # noqa: PLC0415

    labels = [f"{'API' if label.startswith('POST') else 'floor'}\nx{level}" for label, level in samples]
    figure, axes = pyplot.subplots(figsize=(9, 4.5))
    axes.boxplot([[s * 1000 for s in values] for values in samples.values()], tick_labels=labels, showfliers=True)
    axes.set_yscale("log")
    axes.set_ylabel("latency (ms, log scale)")
    axes.set_title("POST /orders via chalice local vs direct GetItem + PutItem + SendMessage (moto server)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def bench_create(stack: Any, count: int, levels: list[int], plot: Path) -> None:
    samples: dict[tuple[str, int], list[float]] = {}
    rows = [row for level in levels for row in measure_create_level(stack, level, count, samples)]
    plot_latencies(samples, plot)
    print("\n### Create\n")
    print(markdown_table(["path", "concurrency", "orders/s", "p50 ms", "p95 ms", "p99 ms"], rows))
    for i in range(0, len(rows), 2):
        ratio = float(rows[i][2].replace(",", "")) / float(rows[i + 1][2].replace(",", ""))
        print(f"- concurrency {rows[i][1]}: API / floor throughput = {ratio:.2f}")


def wait_placed(session: requests.Session, api_url: str, order_ids: list[str]) -> dict[str, float]:
    """placed_at of every order (epoch seconds), polling until all have one."""
    placed_at: dict[str, float] = {}
    deadline = time.monotonic() + 600
    while len(placed_at) < len(order_ids) and time.monotonic() < deadline:
        for order_id in [o for o in order_ids if o not in placed_at]:
            body = session.get(f"{api_url}/orders/{order_id}", timeout=30).json()
            if body["placed_at"]:
                placed_at[order_id] = datetime.fromisoformat(body["placed_at"].replace("Z", "+00:00")).timestamp()
        time.sleep(0.2)
    return placed_at


def post_orders(session: requests.Session, api_url: str, count: int) -> dict[str, float]:
    created: dict[str, float] = {}
    for _ in range(count):
        response = session.post(f"{api_url}/orders", json=ORDER, timeout=30)
        created[response.json()["id"]] = time.time()
    return created


def bench_placement(stack: Any, count: int, latency_s: float, batch_size: int, log: Any) -> None:
    """Two measurements: capacity (a backlog drained by one poller) and latency (orders arriving one by one)."""
    requests.post(f"{stack.exchange_url}/admin/config", json={"failure_rate": 0.0, "latency_s": latency_s}, timeout=5)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.api_key}"

    # Capacity: queue a backlog while no runner polls, then time one poller draining it.
    runner_index = stack.processes.index(stack.process("runner"))
    stack.processes[runner_index].stop()
    backlog = post_orders(session, stack.api_url, count)
    started = time.time()
    stack.processes[runner_index] = start_runner(stack.env, schedule_interval_s=60, stdout=log)
    placed = wait_placed(session, stack.api_url, list(backlog))
    drain_rate = len(placed) / (max(placed.values()) - started)

    # Latency: orders posted one after another into an idle queue.
    arriving = post_orders(session, stack.api_url, count)
    placed_after = wait_placed(session, stack.api_url, list(arriving))
    to_placed = [placed_after[o] - arriving[o] for o in placed_after]

    limit = batch_size / latency_s
    print(f"\n### Placement (one runner poller, exchange latency {latency_s:.1f} s)\n")
    print(
        markdown_table(
            ["orders", "placed/s draining a backlog", "limit: batch / latency", "ratio", "POST->placed p50 s", "p99 s"],
            [
                [
                    count,
                    f"{drain_rate:.1f}",
                    f"{limit:.1f}",
                    f"{drain_rate / limit:.2f}",
                    f"{percentile(to_placed, 50):.2f}",
                    f"{percentile(to_placed, 99):.2f}",
                ]
            ],
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--create-count", type=int, default=300)
    parser.add_argument("--levels", default="1,4,8")
    parser.add_argument("--place-count", type=int, default=200)
    parser.add_argument("--exchange-latency", type=float, default=0.5)
    parser.add_argument("--plot", type=Path, default=Path("docs/bench-create-latency.png"))
    args = parser.parse_args(argv)

    overrides = {"RESOURCE_PREFIX": "bench-orders", "EXCHANGE_FAILURE_RATE": "0", "EXCHANGE_LATENCY_S": "0.5"}
    with (
        tempfile.TemporaryDirectory() as tmp,
        (Path(tmp) / "stack.log").open("wb") as log,
        local_stack(
            free_port(), free_port(), free_port(), schedule_interval_s=60, overrides=overrides, log=log
        ) as stack,
    ):
        names = ("AWS_", "ORDERS_", "EXEC", "API_KEYS_")
        os.environ.update({k: v for k, v in stack.env.items() if k.startswith(names)})
        print("Emulator: moto server (in memory), all processes on 127.0.0.1.")
        bench_placement(stack, args.place_count, args.exchange_latency, batch_size=10, log=log)
        bench_create(stack, args.create_count, [int(level) for level in args.levels.split(",")], args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
