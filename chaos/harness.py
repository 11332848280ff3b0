"""One scenario's local stack (own moto, own names, optional proxy), its load, its faults and its progress line."""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self, TextIO

from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException
from websockets.sync.client import connect

from chalicelib.domain.model import order_id_for_client_key
from chaos.checks import PENDING, ApiClient, ExchangeClient, agrees_with_execution
from chaos.proxy import TcpProxy
from devstack.emulator import emulator_client, start_moto
from devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module
from devstack.stack import DEMO_ACCOUNT, REPO_ROOT, LocalStack, local_stack, start_bridge

ISINS = ("US0378331005", "DE0007164600", "US5949181045", "GB0002634946", "US88160R1014", "NL0010273215")
# Between order sizes and limit prices wide enough that the simulator's limit orders
# rest, fill partly or fill (it decides by draw, capped at the limit).
QUANTITY_RANGE = (1, 200)
LIMIT_PRICE_CENTS = (1_000, 50_000)
POST_RETRY_PAUSE_S = 0.5
MONITOR_INTERVAL_S = 1.0
PROGRESS_INTERVAL_S = 1.0
PROGRESS_PLAIN_EVERY_S = 10.0  # without a terminal, a full line this often instead of a redrawn one
DRAIN_POLL_S = 1.0


# --- A thread for the length of a with block: progress, monitor, feed observer ---


class BackgroundThread:
    """A daemon thread that runs `_run` from the start of a `with` block to its end; `_run` ends once `_stop` is set."""

    def __init__(self, thread_name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        raise NotImplementedError


# --- Progress on stderr ---


class Progress(BackgroundThread):
    """One status line on stderr: redrawn in place on a terminal, printed every few seconds otherwise."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        super().__init__("chaos-progress")
        self.label = label
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._fields: dict[str, object] = {}
        self._lock = threading.Lock()
        self._tty = self.stream.isatty()

    def set(self, **fields: object) -> None:
        with self._lock:
            self._fields.update(fields)

    def note(self, message: str) -> None:
        """A line of its own (a fault injected, a phase begun), kept above the status line."""
        self._write(f"[{self.label} {self.elapsed():6.1f}s] {message}", final=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        with self._lock:
            fields = " ".join(f"{key}={value}" for key, value in self._fields.items())
        return f"[{self.label} {self.elapsed():6.1f}s] {fields}"

    def __exit__(self, *_: object) -> None:
        super().__exit__()
        if self._fields:
            self._write(self.line(), final=True)

    def _write(self, text: str, final: bool = False) -> None:
        if self._tty:
            self.stream.write(f"\r\x1b[K{text}" + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _run(self) -> None:
        last_plain = time.monotonic()
        while not self._stop.wait(PROGRESS_INTERVAL_S):
            if not self._fields:
                continue  # nothing to tell yet (the stack is starting)
            if self._tty:
                self._write(self.line())
            elif time.monotonic() - last_plain >= PROGRESS_PLAIN_EVERY_S:
                last_plain = time.monotonic()
                self._write(self.line())


# --- Orders ---


def order_bodies(rng: random.Random, count: int, key_prefix: str) -> list[dict[str, Any]]:
    """count valid order requests, each with its own idempotency key, so a POST can be retried safely."""
    bodies: list[dict[str, Any]] = []
    for index in range(count):
        body: dict[str, Any] = {
            "type": rng.choice(("market", "limit")),
            "side": rng.choice(("buy", "sell")),
            "instrument": rng.choice(ISINS),
            "quantity": rng.randint(*QUANTITY_RANGE),
            "client_order_id": f"{key_prefix}-{index:05d}",
        }
        if body["type"] == "limit":
            body["limit_price"] = rng.randint(*LIMIT_PRICE_CENTS) / 100
        bodies.append(body)
    return bodies


def order_id_of(body: Mapping[str, Any]) -> str:
    # The load posts as the stack's demo account (ApiClient with stack.api_key).
    return order_id_for_client_key(DEMO_ACCOUNT, str(body["client_order_id"]))


# --- The stack ---


@dataclass(frozen=True)
class StackSpec:
    """How one scenario's stack is set up; settings go into every process's environment."""

    name: str  # RESOURCE_PREFIX and the log file's name
    settings: Mapping[str, str]
    log_dir: Path
    runner_concurrency: int = 4
    # Orders queue visibility timeout (the template's PlacementVisibilityTimeoutSeconds,
    # 60 s): how long a message received by a runner that then died stays invisible.
    visibility_timeout_s: int | None = None
    proxy: bool = False
    # The runner fires every schedule (the pending sweep, the reconciler) this often.
    schedule_interval_s: float = 5.0


def start_runner(
    env: Mapping[str, str], schedule_interval_s: float, concurrency: int, log: IO[bytes]
) -> ManagedProcess:
    """devstack's runner with up to `concurrency` concurrent SQS batches, scaling with the backlog.

    One batch at a time cannot keep up with thousands of orders.
    """
    argv = python_module(
        "devstack.runner",
        *("--app", "app:app", "--stage", "local"),
        *("--schedule-interval", str(schedule_interval_s), "--sqs-concurrency", str(concurrency)),
    )
    return ManagedProcess("runner", argv, env=env, cwd=str(REPO_ROOT), stdout=log).start()


@contextlib.contextmanager
def _endpoint_in_environ(url: str) -> Iterator[None]:
    # local_stack uses AWS_ENDPOINT_URL if set (and then starts no moto of its own); it
    # copies the environment for its children at once, so it is restored right after.
    previous = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = url
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = previous


class ChaosStack:
    """A running stack and the handles a scenario needs: clients, moto bypassing the proxy, fault injection."""

    def __init__(
        self, spec: StackSpec, stack: LocalStack, moto_url: str, proxy: TcpProxy | None, log: IO[bytes]
    ) -> None:
        self.spec = spec
        self.stack = stack
        self.moto_url = moto_url
        self.proxy = proxy
        self.log = log
        self.log_path = spec.log_dir / f"{spec.name}.log"
        self.api = ApiClient(stack.api_url, stack.api_key)
        self.exchange = ExchangeClient(stack.exchange_url)
        # The checker's own view goes straight to moto: it must see the truth while the
        # system under test cannot reach it (outage), and must not load the proxy.
        # boto3 clients are thread-safe: the monitor and the scenario share these.
        self._sqs = emulator_client("sqs", moto_url)
        self._dynamodb = emulator_client("dynamodb", moto_url)
        self.queue_url = str(self._sqs.get_queue_url(QueueName=stack.resources["OrdersQueueName"])["QueueUrl"])
        self.table = stack.resources["OrdersTableName"]
        self.runner = stack.process("runner")
        self.bridge = stack.process("bridge")
        self._replacements: list[ManagedProcess] = []

    def kill_runner(self) -> None:
        """SIGKILL the runner's whole process group, as a crashing host would: no clean-up of any kind."""
        self.runner.kill()

    def start_runner(self) -> None:
        self.runner = start_runner(
            self.stack.env, self.spec.schedule_interval_s, self.spec.runner_concurrency, self.log
        )
        self._replacements.append(self.runner)

    def kill_bridge(self) -> None:
        self.bridge.kill()

    def start_bridge(self) -> None:
        self.bridge = start_bridge(self.stack.env, self.log)
        self._replacements.append(self.bridge)

    def stop_replacements(self) -> None:
        for process in reversed(self._replacements):
            process.stop()

    def queue_depth(self) -> tuple[int, int]:
        """(visible or delayed, in flight) messages of the orders queue."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attributes = self._sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)["Attributes"]
        return (
            int(attributes[names[0]]) + int(attributes[names[2]]),
            int(attributes[names[1]]),
        )

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every stored order's id, status, filled quantity and average price, straight from the table."""
        orders: dict[str, dict[str, Any]] = {}
        request: dict[str, Any] = {
            "TableName": self.table,
            "ProjectionExpression": "id, #s, filled_quantity, average_fill_price, client_order_id",
            "ExpressionAttributeNames": {"#s": "status"},
        }
        while True:
            page = self._dynamodb.scan(**request)
            for item in page.get("Items", []):
                orders[item["id"]["S"]] = {
                    "status": item["status"]["S"],
                    "filled_quantity": int(item.get("filled_quantity", {}).get("N", "0")),
                    "average_fill_price": item.get("average_fill_price", {}).get("S"),
                    "client_order_id": item.get("client_order_id", {}).get("S"),
                }
            if "LastEvaluatedKey" not in page:
                return orders
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def stored(self, order_id: str) -> bool:
        item = self._dynamodb.get_item(TableName=self.table, Key={"id": {"S": order_id}}, ConsistentRead=True)
        return "Item" in item


@contextlib.contextmanager
def chaos_stack(spec: StackSpec) -> Iterator[ChaosStack]:
    """Start moto, the proxy if asked, and the whole local stack; stop all of it however the block ends."""
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stop:
        moto_port = free_port()
        moto = start_moto(moto_port)
        stop.callback(moto.stop)
        moto_url = f"http://{LOOPBACK}:{moto_port}"
        proxy = None
        endpoint = moto_url
        if spec.proxy:
            proxy = TcpProxy(moto_port).start()
            stop.callback(proxy.stop)
            endpoint = proxy.url
        log = stop.enter_context((spec.log_dir / f"{spec.name}.log").open("wb"))
        with _endpoint_in_environ(endpoint):
            stack = stop.enter_context(
                local_stack(
                    api_port=free_port(),
                    exchange_port=free_port(),
                    feed_port=free_port(),
                    schedule_interval_s=spec.schedule_interval_s,
                    overrides={"RESOURCE_PREFIX": spec.name, **spec.settings},
                    log=log,
                )
            )
        chaos = ChaosStack(spec, stack, moto_url, proxy, log)
        stop.callback(chaos.stop_replacements)
        if spec.visibility_timeout_s is not None:
            emulator_client("sqs", moto_url).set_queue_attributes(
                QueueUrl=chaos.queue_url, Attributes={"VisibilityTimeout": str(spec.visibility_timeout_s)}
            )
        # Swap the stack's runner for one capped at the scenario's SQS concurrency.
        chaos.runner.stop()
        chaos.start_runner()
        yield chaos


# --- Load ---


@dataclass(frozen=True)
class Post:
    """One POST /orders as the client saw it (the last try, if it was retried)."""

    body: Mapping[str, Any]
    status: int | None  # None: no HTTP answer (connection error, timeout)
    answer: Any
    started: float  # time.monotonic()
    ended: float
    tries: int

    @property
    def order_id(self) -> str:
        return order_id_of(self.body)

    @property
    def acknowledged(self) -> bool:
        return self.status in (200, 201)


@dataclass
class LoadStats:
    sent: int = 0
    acknowledged: int = 0
    statuses: Counter[int | None] = field(default_factory=Counter)


class Monitor(BackgroundThread):
    """Watches the orders queue and the exchange from outside the system, for the load's gate and the progress line.

    No table scans here: a scan of thousands of orders costs moto about half a
    second each time, which would slow the very system being measured.
    """

    def __init__(self, chaos: ChaosStack, progress: Progress) -> None:
        super().__init__("chaos-monitor")
        self.chaos = chaos
        self.progress = progress
        self.depth = 0

    def _run(self) -> None:
        while not self._stop.wait(MONITOR_INTERVAL_S):
            try:
                visible, in_flight = self.chaos.queue_depth()
                self.depth = visible + in_flight
                stats = self.chaos.exchange.stats()
                self.progress.set(
                    queue=f"{visible}+{in_flight}",
                    exchange=f"accepted:{stats['accepted']},failures:{stats['failures']}",
                )
            except Exception as exc:  # the monitor only informs; a failed look is retried next second
                self.progress.set(monitor=f"error:{type(exc).__name__}")


class Load:
    """POSTs orders from a few threads at a bounded rate, holding back while the placement queue is deep.

    moto's SQS scans the whole queue on every call, so a deep queue slows every
    receive and delete (shared STACK_NOTES): bounding the depth keeps the run
    measuring our system, not moto's worst case.
    """

    def __init__(
        self,
        api: ApiClient,
        progress: Progress,
        *,
        threads: int = 8,
        max_rate: float = 50.0,
        depth: Callable[[], int] | None = None,
        max_depth: int = 0,
        retries: int = 3,
        timeout_s: float = 30.0,
    ) -> None:
        self.api = api
        self.progress = progress
        self.threads = threads
        self.interval_s = 1.0 / max_rate
        self.depth = depth
        self.max_depth = max_depth
        self.retries = retries
        self.timeout_s = timeout_s
        self.stats = LoadStats()
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        self._next_slot = time.monotonic()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def answered(self) -> list[Post]:
        """The POSTs answered so far, while the load may still be running."""
        with self._lock:
            return list(self.posts)

    def run(self, bodies: Sequence[Mapping[str, Any]], deadline_s: float) -> list[Post]:
        """POST every body (or until deadline_s); returns what each POST answered."""
        work = list(reversed(bodies))
        deadline = time.monotonic() + deadline_s

        def worker() -> None:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if not work:
                        return
                    body = work.pop()
                self._wait_turn(deadline)
                post = self._post(body)
                with self._lock:
                    self.posts.append(post)
                    self.stats.sent += 1
                    self.stats.acknowledged += post.acknowledged
                    self.stats.statuses[post.status] += 1
                    self.progress.set(posted=f"{self.stats.sent}/{len(bodies)}", acked=self.stats.acknowledged)

        threads = [threading.Thread(target=worker, name=f"chaos-load-{i}", daemon=True) for i in range(self.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + self.timeout_s * (self.retries + 1))
        return list(self.posts)

    def _wait_turn(self, deadline: float) -> None:
        # The depth gate first, then the rate: a freed slot is not spent on a queue that is still full.
        while self.depth is not None and self.depth() >= self.max_depth and time.monotonic() < deadline:
            if self._stop.wait(0.2):
                return
        with self._lock:
            slot = max(self._next_slot, time.monotonic())
            self._next_slot = slot + self.interval_s
        time.sleep(max(0.0, slot - time.monotonic()))

    def _post(self, body: Mapping[str, Any]) -> Post:
        tries = 0
        while True:
            tries += 1
            attempt_started = time.monotonic()
            status: int | None
            try:
                response = self.api.post(body, timeout_s=self.timeout_s)
                status = response.status_code
                try:
                    answer: Any = response.json()
                except ValueError:
                    answer = response.text
            except OSError as exc:  # requests' errors are OSErrors: no answer at all
                status, answer = None, f"{type(exc).__name__}: {exc}"
            answered = status is not None and status < 500
            if answered or tries > self.retries:
                # started: of the last try, the one whose answer this is.
                return Post(body, status, answer, attempt_started, time.monotonic(), tries)
            # The same idempotency key makes a retry safe: at most one order per key.
            time.sleep(POST_RETRY_PAUSE_S)


# --- Waiting for the system to settle ---


def wait_until_settled(
    chaos: ChaosStack,
    order_ids: Sequence[str],
    timeout_s: float,
    progress: Progress,
    executions: bool = False,
) -> tuple[float, set[str]]:
    """Seconds until no order is pending (and, with executions, each agrees with the exchange), and the rest."""
    started = time.monotonic()
    remaining = set(order_ids)
    while True:
        scan_started = time.monotonic()
        stored = chaos.snapshot()
        scan_s = time.monotonic() - scan_started
        done = {oid for oid in remaining if oid in stored and stored[oid]["status"] != PENDING}
        if executions:
            done = {oid for oid in done if _final_at_the_exchange(chaos, oid, stored[oid])}
        remaining -= done
        progress.set(unsettled=len(remaining))
        elapsed = time.monotonic() - started
        if not remaining or elapsed >= timeout_s:
            return elapsed, remaining
        # Scans load moto like the system does: at most a fifth of its time goes to watching.
        time.sleep(max(DRAIN_POLL_S, 4 * scan_s))


def _final_at_the_exchange(chaos: ChaosStack, order_id: str, ours: Mapping[str, Any]) -> bool:
    if ours["status"] == "failed":
        return True
    record = chaos.exchange.record(order_id)
    if record is None or not agrees_with_execution(ours, record.get("execution")):
        return False
    return executions_arrived(chaos, order_id, record)


def executions_arrived(chaos: ChaosStack, order_id: str, record: Mapping[str, Any] | None) -> bool:
    """Whether our executions of the order are every report the feed carried for it.

    The reconciler may settle an order from the exchange's status before the
    feed's reports arrive (a killed bridge replays them later): a wait for
    the order to agree must wait for them too, or the executions check races them.
    """
    carried = sorted(((record or {}).get("execution") or {}).get("exec_ids", []))
    if not carried:
        return True
    return sorted(str(e["id"]) for e in chaos.api.executions(order_id)) == carried


# --- The execution feed, watched like any other client ---


class FeedObserver(BackgroundThread):
    """A WebSocket client of the simulator's feed that counts the duplicated and out-of-order reports it is sent.

    The simulator draws duplication and reordering once per report, so every live
    client (the bridge too) sees the same ones: these are the faults the bridge got.
    """

    def __init__(self, feed_url: str, credential: str | None = None) -> None:
        super().__init__("chaos-feed-observer")
        self.feed_url = feed_url
        # The venue credential the stack's simulator demands on the handshake, as the bridge sends it.
        self._headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        self.reports = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.error: str | None = None
        self._seen: set[int] = set()
        self._highest = 0

    def _run(self) -> None:
        try:
            with connect(
                f"{self.feed_url}?from_seq=1", additional_headers=self._headers, open_timeout=10, close_timeout=1
            ) as socket:
                while not self._stop.is_set():
                    try:
                        message = socket.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    seq = int(json.loads(message)["seq"])
                    self.reports += 1
                    if seq in self._seen:
                        self.duplicates += 1
                    elif seq < self._highest:
                        self.out_of_order += 1
                    self._seen.add(seq)
                    self._highest = max(self._highest, seq)
        except (ConnectionClosed, InvalidURI, WebSocketException, OSError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
