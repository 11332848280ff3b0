"""Placement from a backlog: the stack's runner draining it, beside the limit pollers x batch / exchange latency and
the floor of the same per-order AWS calls made directly; POST -> placed latency at rest and under the backlog.

The backlog is posted through the API while no runner polls; then a runner
is started (the stack's own command) and timed until the queue is empty. The
placement times come from the orders themselves (placed_at, read once at the
end), so the measurement adds no load while the runner works.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import re
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import boto3
import requests
from botocore.config import Config

from bench.common import CallCounter, percentile
from bench.cpu_profile import CpuProfiler, CpuWindow, EmulatorRecorder, calls_lines, cpu_table
from bench.create import ORDER, drive, pooled
from chalicelib import bootstrap
from chalicelib.adapters.exchange import CancelOutcome, ExchangeAck
from chalicelib.adapters.orders_table import DynamoDBOrderRepository, order_record_class_for
from chalicelib.adapters.queue import placement_message
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.config import get_settings
from chalicelib.domain.model import Order, OrderTerms, OrderType, Side, VenueOrderState
from chalicelib.service.placement import PlacementOutcome, place_order
from devstack.processes import ManagedProcess
from devstack.runner.cli import MAX_SQS_CONCURRENCY_ENV
from devstack.runner.scaling import LAMBDA_SQS_MAX_CONCURRENT_BATCHES
from devstack.stack import LocalStack, start_bridge, start_runner

PLACE_HANDLER = "place_orders"
# The runner's log line per batch (devstack/runner/sqs.py) and its logging format (cli.py).
_INVOKED = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*invoked \S*place_orders records=(?P<records>\d+)"
    r".* duration_ms=(?P<ms>\d+)"
)
# The sweep would re-send messages of orders waiting longer than its delay: kept out of a capacity measurement.
NO_SWEEP_S = 3600.0
# Seconds between a backlog's POSTs and its drain: the simulator's execution reports of an earlier drain
# (each order's fills come over a few exec delays) are applied before the next window opens.
SETTLE_S = 5.0


@dataclass
class Drain:
    """Orders placed from a backlog: when the drain started and when each order was placed (epoch seconds)."""

    label: str
    orders: int
    started: float
    placed_at: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return max(self.placed_at.values()) - self.started if self.placed_at else float("nan")

    @property
    def rate(self) -> float:
        return len(self.placed_at) / self.seconds if self.placed_at else 0.0

    def curve(self) -> list[float]:
        """Seconds from the start at which each order was placed, in order: the drain curve."""
        return sorted(at - self.started for at in self.placed_at.values())


def configure_exchange(stack: LocalStack, latency_s: float) -> None:
    response = requests.post(
        f"{stack.exchange_url}/admin/config", json={"failure_rate": 0.0, "latency_s": latency_s}, timeout=5
    )
    response.raise_for_status()


def configured_concurrency(runner_env: dict[str, str]) -> int:
    """The most placement batches the runner was allowed at once: as it computes it (devstack/runner/scaling.py).

    The mapping's maximum_concurrency as the app declares it (Lambda's 1,000
    if none), lowered to the runner's cap ($RUNNER_MAX_SQS_CONCURRENCY) if set.
    """
    from app import app  # noqa: PLC0415 - reads its settings at import, after orders.py set the environment

    declared = next(
        (getattr(source, "maximum_concurrency", None) for source in app.event_sources if source.name == PLACE_HANDLER),
        None,
    )
    maximum = int(declared) if declared else LAMBDA_SQS_MAX_CONCURRENT_BATCHES
    cap = runner_env.get(MAX_SQS_CONCURRENCY_ENV)
    return max(1, min(maximum, int(cap))) if cap else maximum


def observed_concurrency(runner_log: Path) -> int:
    """Most placement batches in flight at once, from the runner's log (each line: end time and duration)."""
    edges: list[tuple[float, int]] = []
    for line in runner_log.read_text(errors="replace").splitlines():
        match = _INVOKED.match(line)
        if match:
            ended = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            edges += [(ended - int(match["ms"]) / 1000, 1), (ended, -1)]
    in_flight = most = 0
    for _, step in sorted(edges):
        in_flight += step
        most = max(most, in_flight)
    return most


def post_orders(stack: LocalStack, count: int, clients: int) -> dict[str, float]:
    """count orders through the API by concurrent clients: order id -> epoch seconds the POST started."""
    posted: dict[str, float] = {}
    lock = threading.Lock()

    def new_client() -> Any:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {stack.api_key}"

        def post() -> None:
            started = time.time()
            response = session.post(f"{stack.api_url}/orders", json=ORDER, timeout=30)
            response.raise_for_status()
            with lock:
                posted[response.json()["id"]] = started

        return post

    drive(new_client, count, clients, "backlog POSTs")
    return posted


def post_spaced(stack: LocalStack, count: int, gap_s: float) -> dict[str, float]:
    """Orders posted one after another, gap_s apart: a trickle whose every order meets the queue as it is."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.api_key}"
    posted: dict[str, float] = {}
    for _ in range(count):
        started = time.time()
        posted[post_with_retries(session, f"{stack.api_url}/orders")] = started
        time.sleep(gap_s)
    return posted


def post_with_retries(session: requests.Session, url: str, attempts: int = 5) -> str:
    """One order, retried on a 5xx with its client_order_id as a client does (the API's answer when the emulator
    is too slow for a write's timeouts): the id of the one order it makes."""
    body = {**ORDER, "client_order_id": f"bench-{uuid.uuid4().hex}"}
    for attempt in range(attempts):
        response = session.post(url, json=body, timeout=30)
        if response.status_code < 500 or attempt == attempts - 1:
            break
        time.sleep(2**attempt)
    response.raise_for_status()
    return str(response.json()["id"])


def wait_queue_empty(sqs: Any, queue_url: str, timeout_s: float) -> bool:
    """Until no message is left, visible or in flight: one cheap call every half second (moto scans the queue)."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
        if all(int(attributes.get(name, 0)) == 0 for name in names):
            return True
        time.sleep(0.5)
    return False


def placed_times(orders: DynamoDBOrderRepository, order_ids: list[str]) -> dict[str, float]:
    found: dict[str, Order] = {}
    for start in range(0, len(order_ids), 100):  # BatchGetItem takes 100 keys
        found.update(orders.get_many(order_ids[start : start + 100]))
    return {order_id: o.placed_at.timestamp() for order_id, o in found.items() if o.placed_at is not None}


def restart_runner(stack: LocalStack, log: IO[bytes], log_path: Path) -> float:
    """Replace the stack's runner by a fresh one logging to log_path; epoch seconds when it said it was ready."""
    index = stack.processes.index(stack.process("runner"))
    stack.processes[index].stop()
    runner: ManagedProcess = start_runner(stack.env, schedule_interval_s=NO_SWEEP_S, stdout=log)
    stack.processes[index] = runner
    deadline = time.monotonic() + 60
    while "runner ready" not in log_path.read_text(errors="replace"):
        if time.monotonic() > deadline or not runner.alive():
            raise RuntimeError(f"the runner did not start: see {log_path}")
        time.sleep(0.02)
    return time.time()


def stop_runner(stack: LocalStack) -> None:
    stack.process("runner").stop()


@dataclass
class PlacementFigures:
    drain: Drain
    floor: Drain
    floor_calls: CallCounter
    configured_pollers: int  # the runner's maximum concurrency: the limit's and the floor's
    observed_pollers: int  # the most batches the runner had in flight at once
    under_backlog: list[float]  # POST -> placed, seconds
    at_rest: list[float]
    recorded: DrainRun | None = None  # the same drain again, moto's recorder on: requests per placed order
    without_executions: DrainRun | None = None  # the same drain again, the feed bridge stopped
    cpu: list[CpuWindow] = field(default_factory=list)


def to_placed(posted: dict[str, float], placed: dict[str, float]) -> list[float]:
    return [placed[order_id] - started for order_id, started in posted.items() if order_id in placed]


@dataclass
class DrainRun:
    """One drain by the stack's runner, with its CPU window and, if recorded, the emulator's requests."""

    drain: Drain
    under_backlog: list[float]  # POST -> placed of the probes posted behind the backlog, seconds
    observed_pollers: int
    cpu: CpuWindow
    calls: collections.Counter[str] | None = None


def drain_through_stack(
    stack: LocalStack,
    count: int,
    probes: int,
    log_dir: Path,
    profiler: CpuProfiler,
    label: str = "stack's runner",
    recorder: EmulatorRecorder | None = None,
) -> DrainRun:
    """The stack's runner drains a backlog of count orders; probes posted meanwhile measure POST -> placed.

    The CPU window (and the recorder, if given) runs from the runner's ready
    line until the queue is empty: the backlog's POSTs are outside it.
    """
    sqs = boto3.session.Session().client("sqs", endpoint_url=stack.endpoint_url)
    queue_url = sqs.get_queue_url(QueueName=stack.env["ORDERS_QUEUE_NAME"])["QueueUrl"]
    orders = bootstrap.order_repository()
    stop_runner(stack)
    # Only the backlog's messages: nothing left from earlier scenarios. moto keeps PurgeQueue's
    # one-per-60-s rule; a purge refused for that follows an earlier drain, which left the queue empty.
    with contextlib.suppress(sqs.exceptions.PurgeQueueInProgress):
        sqs.purge_queue(QueueUrl=queue_url)
    if not wait_queue_empty(sqs, queue_url, timeout_s=30):
        raise RuntimeError("the orders queue is not empty before the backlog is posted")
    backlog = post_orders(stack, count, clients=16)
    # The execution reports of the backlog's POSTs (none yet: nothing placed) and of earlier drains settle first.
    time.sleep(SETTLE_S)
    log_path = log_dir / f"runner-drain-{len(profiler.windows)}.log"
    with log_path.open("wb") as log:
        drain = Drain(label, count, restart_runner(stack, log, log_path))
        profiler.start(label)
        if recorder:
            recorder.start()
        # Behind the whole backlog: what a user posting now waits.
        probing = post_spaced(stack, probes, gap_s=0.2)
        if not wait_queue_empty(sqs, queue_url, timeout_s=max(600.0, count)):
            print("warning: the orders queue did not empty in time; figures cover what was placed")
        calls = recorder.stop() if recorder else None
        cpu = profiler.stop(0)  # the orders once read, outside the window
    placed = placed_times(orders, list(backlog) + list(probing))
    drain.placed_at = {order_id: placed[order_id] for order_id in backlog if order_id in placed}
    cpu.orders = len(drain.placed_at)
    return DrainRun(drain, to_placed(probing, placed), observed_concurrency(log_path), cpu, calls)


def drain_without_executions(
    stack: LocalStack, count: int, probes: int, log_dir: Path, profiler: CpuProfiler
) -> DrainRun:
    """The same drain with the feed bridge stopped: no execution report reaches Kinesis, so nothing is applied.

    The bridge is started again afterwards (it resumes from its checkpoint).
    """
    index = stack.processes.index(stack.process("bridge"))
    stack.processes[index].stop()
    try:
        return drain_through_stack(stack, count, probes, log_dir, profiler, "runner, bridge stopped")
    finally:
        stack.processes[index] = start_bridge(stack.env, subprocess.DEVNULL)


def at_rest(stack: LocalStack, probes: int) -> list[float]:
    """POST -> placed of orders posted one by one into an idle stack."""
    sqs = boto3.session.Session().client("sqs", endpoint_url=stack.endpoint_url)
    queue_url = sqs.get_queue_url(QueueName=stack.env["ORDERS_QUEUE_NAME"])["QueueUrl"]
    posted = post_spaced(stack, probes, gap_s=0.3)
    wait_queue_empty(sqs, queue_url, timeout_s=120)
    return to_placed(posted, placed_times(bootstrap.order_repository(), list(posted)))


class InstantExchange:
    """An exchange that accepts at once: the floor measures the emulator, not the exchange's latency."""

    def place(self, order: Order) -> ExchangeAck:
        return ExchangeAck(exchange_order_id=f"X-{order.id}")

    def cancel(self, order_id: str) -> CancelOutcome:
        raise NotImplementedError("the floor only places")

    def status(self, order_id: str) -> VenueOrderState | None:
        raise NotImplementedError("the floor only places, and every placement is answered")


def fill_floor_queue(orders: DynamoDBOrderRepository, sqs: Any, queue_url: str, count: int) -> list[str]:
    """count pending orders and their placement messages, as the API would have left them (not timed)."""
    account = "bench-floor"
    terms = OrderTerms(OrderType.LIMIT, Side.BUY, ORDER["instrument"], 10, None)  # type: ignore[arg-type]

    def add(_: int) -> str:
        now = datetime.now(UTC)
        return orders.add(Order.create(account, terms, now), now + timedelta(hours=1)).id

    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = list(pool.map(add, range(count)))
    for start in range(0, count, 10):
        entries = [{"Id": str(i), "MessageBody": placement_message(o)} for i, o in enumerate(ids[start : start + 10])]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    return ids


def placement_floor(
    stack: LocalStack, count: int, pollers: int, batch_size: int, profiler: CpuProfiler
) -> tuple[Drain, CallCounter]:
    """The per-order calls of a placement made directly, pollers batches at a time, the exchange answering at once.

    Per batch: ReceiveMessage, then per order (one thread each, as the handler
    does) GetItem + the claim's UpdateItem + the outcome's UpdateItem through
    the real place_order, then DeleteMessageBatch. Its own queue, filled with
    the same count first, so it meets the same queue-size slowdown.
    """
    threads = pollers * batch_size
    sqs = boto3.session.Session().client(
        "sqs", endpoint_url=stack.endpoint_url, config=Config(max_pool_connections=max(10, threads))
    )
    queue_url = sqs.create_queue(QueueName="bench-place-floor", Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
    # bootstrap's repository settings, with a connection per thread: the floor is the emulator's, not a pool's.
    settings = get_settings()
    records = order_record_class_for(settings.orders_table_name, **bootstrap.dynamodb_connection(settings))
    orders = DynamoDBOrderRepository(pooled(records, max(10, threads)))
    fill_floor_queue(orders, sqs, queue_url, count)
    dependencies = dataclasses.replace(bootstrap.bootstrap(), orders=orders, exchange=InstantExchange())
    counter = CallCounter()
    counter.attach(sqs)
    counter.attach(orders.client)
    drain = Drain("floor: same calls, direct", count, time.time())
    done = threading.Lock()
    handled = [0]
    floor_errors = [0]
    deadline = time.monotonic() + max(600.0, count)

    def poller() -> None:
        with ThreadPoolExecutor(max_workers=batch_size) as pool:
            while handled[0] < count and time.monotonic() < deadline:
                messages = sqs.receive_message(
                    QueueUrl=queue_url, MaxNumberOfMessages=batch_size, WaitTimeSeconds=1, AttributeNames=["All"]
                ).get("Messages", [])
                if not messages:
                    continue
                results = list(pool.map(place_one, messages))
                entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
                sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
                with done:
                    handled[0] += len(messages)
                    drain.placed_at.update((order_id, at) for order_id, at in results if order_id)

    def place_one(message: dict[str, Any]) -> tuple[str | None, float]:
        order_id = str(json.loads(message["Body"])["order_id"])
        receive_count = int(message["Attributes"]["ApproximateReceiveCount"])
        try:
            result = place_order(order_id, receive_count, dependencies)
        except StorageUnavailable:
            # The emulator gave up under load: counted, and the order is lost to the floor's figure (not retried).
            with done:
                floor_errors[0] += 1
            return None, time.time()
        return (order_id if result.outcome is PlacementOutcome.PLACED else None), time.time()

    workers = [threading.Thread(target=poller, name=f"floor-poller-{i}") for i in range(pollers)]
    profiler.start(drain.label)
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    profiler.stop(len(drain.placed_at))
    if floor_errors[0]:
        print(f"warning: {floor_errors[0]} floor placements failed on the emulator (StorageUnavailable)")
    return drain, counter


def measure_placement(
    stack: LocalStack,
    count: int,
    probes: int,
    latency_s: float,
    batch_size: int,
    log_dir: Path,
    profiler: CpuProfiler,
    recorder: EmulatorRecorder | None = None,
) -> PlacementFigures:
    """The drain, at rest, the floor; then, for the profile, the drain recorded and the drain without executions.

    The drain without executions comes last: the bridge, started again, catches
    up on the reports it missed, which would load whatever came next.
    """
    configure_exchange(stack, latency_s)
    run = drain_through_stack(stack, count, probes, log_dir, profiler)
    recorded = (
        drain_through_stack(stack, count, probes, log_dir, profiler, "runner, moto recording", recorder)
        if recorder
        else None
    )
    resting = at_rest(stack, probes)
    configured = configured_concurrency(stack.env)
    # The floor runs at the runner's maximum concurrency, as the limit does: a runner that
    # scales poorly must not lower its own bar by reaching fewer batches at once.
    floor, counter = placement_floor(stack, count, configured, batch_size, profiler)
    without = drain_without_executions(stack, count, probes, log_dir, profiler)
    return PlacementFigures(
        run.drain, floor, counter, configured, run.observed_pollers, run.under_backlog, resting,
        recorded, without, list(profiler.windows),
    )  # fmt: skip


def placement_lines(figures: PlacementFigures, latency_s: float, batch_size: int) -> list[str]:
    """The table row and the ratios the targets are about."""
    pollers = figures.configured_pollers
    limit = pollers * batch_size / latency_s
    floor_rate = figures.floor.rate
    bound = min(limit, floor_rate)
    drain = figures.drain
    calls = figures.floor_calls
    per_op = ", ".join(f"{name} {calls.calls[name]} x {calls.mean_ms(name):.1f} ms" for name in sorted(calls.calls))
    emulator_share = figures.floor.seconds / drain.seconds if drain.placed_at else float("nan")
    return [
        f"| {drain.orders} | {pollers} configured, {figures.observed_pollers} reached | {drain.rate:.1f} | "
        f"{limit:.1f} | {floor_rate:.1f} | "
        f"{drain.rate / bound:.2f} | {len(drain.placed_at)}/{drain.orders} |",
        "",
        f"- placed/s / min(limit, floor) = {drain.rate / bound:.2f} (target >= 0.8), "
        f"placed/s = {drain.rate:.1f} (target >= 20 at {latency_s:.1f} s)",
        f"- drain {drain.seconds:.1f} s; the floor's same calls took {figures.floor.seconds:.1f} s at the runner's "
        f"configured concurrency ({pollers} batches at once; the runner reached {figures.observed_pollers}): "
        f"the emulator alone accounts for {emulator_share:.0%} of the drain time",
        f"- floor calls (count x mean duration): {per_op}",
        f"- POST -> placed, at rest: p50 {percentile(figures.at_rest, 50):.2f} s, "
        f"p99 {percentile(figures.at_rest, 99):.2f} s ({len(figures.at_rest)} orders)",
        f"- POST -> placed, posted behind the backlog: p50 {percentile(figures.under_backlog, 50):.2f} s, "
        f"p99 {percentile(figures.under_backlog, 99):.2f} s ({len(figures.under_backlog)} orders)",
    ]


def profile_lines(figures: PlacementFigures, latency_s: float, batch_size: int) -> list[str]:
    """The drains side by side, CPU per process in each window, and the emulator's requests per placed order."""
    bound = min(figures.configured_pollers * batch_size / latency_s, figures.floor.rate)
    runs = [figures.drain] + [r.drain for r in (figures.recorded, figures.without_executions) if r is not None]
    lines = ["| drain | placed | s | placed/s | / min(limit, floor) | / normal drain |", "|---|---|---|---|---|---|"]
    for drain in runs:
        lines.append(
            f"| {drain.label} | {len(drain.placed_at)}/{drain.orders} | {drain.seconds:.1f} | {drain.rate:.1f} | "
            f"{drain.rate / bound:.2f} | {drain.rate / figures.drain.rate:.2f} |"
        )
    lines += ["", "CPU per process in each window: % of one core · ms per order (2 cores = 200%)", ""]
    lines += cpu_table(figures.cpu)
    recorded = figures.recorded
    if recorded is not None and recorded.calls is not None:
        placed = len(recorded.drain.placed_at)
        lines += ["", f"Emulator requests during the recorded drain, whole stack ({placed} placed):", ""]
        lines += calls_lines(recorded.calls, placed)
        floor = figures.floor_calls
        per_order = floor.total / len(figures.floor.placed_at) if figures.floor.placed_at else float("nan")
        lines.append(f"\n- the floor's own requests per placed order: {per_order:.2f} ({floor.total} requests)")
    return lines


PLACEMENT_HEADER = [
    "| backlog | pollers | placed/s | limit: pollers x batch / latency | floor: same calls direct, placed/s "
    "| ratio to min | placed |",
    "|---|---|---|---|---|---|---|",
]
