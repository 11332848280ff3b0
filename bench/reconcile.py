"""The reconciler's cost per run: exchange status calls, DynamoDB calls and read units, seconds, runs per book.

A moto server with our stack (bench_stack) and the exchange simulator as a
real process on loopback. A book of N open orders is created through the
API handler and placed through the placement handler, so the exchange holds
each one; their executions are far off (the simulator's exec delay is a
day), so every order agrees with the exchange. Then the reconcile
entrypoint (what the `reconcile_orders` schedule runs, with
bootstrap.production()) runs again and again until its cursor is back at
the start of its index: one pass over the book. Three passes:

- steady: the N orders, nothing to repair;
- lost reports: a share more orders placed while the exchange fills at once
  and no feed bridge runs, so their fills never reach us: the reconciler
  repairs each (one UpdateItem) and it leaves the reconcile index;
- after repair: the N orders again, the repaired ones gone from the index.

Every AWS call of the app's clients is counted by operation (CallCounter),
and the read and write units each would consume on DynamoDB are estimated
from the items the calls return (moto's own ConsumedCapacity is a constant).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
from chalice.test import Client

from bench.calls import LAMBDA_MEMORY_GB, ORDER, PRICES, counted_clients, receive_placements
from bench.common import CallCounter, Stopwatch, bench_stack, markdown_table
from chalicelib import bootstrap, observability
from chalicelib.config import get_settings
from chalicelib.entrypoints import reconcile
from chalicelib.entrypoints.reconcile import RECONCILE_THREADS
from devstack.emulator import emulator_client
from devstack.lambda_context import FunctionSpec
from devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module
from devstack.runner.events import scheduled_event, sqs_event

FULL_ORDERS = 1_000
QUICK_ORDERS = 250
LOST_SHARE = 0.1
# A round trip to the simulated venue; the 8 reconciler threads overlap them.
EXCHANGE_LATENCY_S = 0.05
# Long enough that no order placed for the steady book gets any execution
# during the run (not even its `new` report): it stays open at the exchange.
OPEN_EXEC_DELAY_S = 86_400.0
# Short enough that the lost-reports orders are filled at the exchange
# within a second of their placement.
FILLING_EXEC_DELAY_S = 0.01
PLACEMENT_CHUNK = 100
HTTP_TIMEOUT_S = 10.0
DONE_DEADLINE_S = 60.0
REGION = "us-east-1"
RULE_ARN = f"arn:aws:events:{REGION}:123456789012:rule/bench-reconcile_orders"
# ReconcileCursor(0, None).to_text(): the next run starts the index over.
CURSOR_AT_START = "0:"
DYNAMODB_OPERATIONS = ("Query", "BatchGetItem", "GetItem", "PutItem", "UpdateItem")
# The orders table's indexes an order update touches (infra/resources.yaml).
ACCOUNT_ORDERS_INDEX_PROJECTS_ALL = True
RECONCILE_INDEX_KEY = "reconcile_shard"
LOG_PATH = Path("build/bench/reconcile.log")
READ_UNIT_BYTES = 4096
WRITE_UNIT_BYTES = 1024


# --- DynamoDB's item size and capacity units, from the wire format ---


def number_size(text: str) -> int:
    """Bytes of a DynamoDB number: one per two significant digits, plus one."""
    digits = text.lstrip("+-").split("e")[0].split("E")[0].replace(".", "").strip("0")
    return math.ceil(max(len(digits), 1) / 2) + 1


def value_size(value: Mapping[str, Any]) -> int:
    """Bytes of one attribute value ({"S": ...}, {"N": ...}, ...) as DynamoDB sizes items."""
    ((kind, data),) = value.items()
    if kind == "S":
        return len(str(data).encode())
    if kind == "N":
        return number_size(str(data))
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(str(member).encode()) for member in data)
    if kind == "NS":
        return sum(number_size(str(member)) for member in data)
    if kind == "BS":
        return sum(len(member) for member in data)
    if kind == "L":
        return 3 + sum(1 + value_size(member) for member in data)
    if kind == "M":
        return 3 + sum(1 + len(name.encode()) + value_size(member) for name, member in data.items())
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """Bytes of an item: each attribute's name and value."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def read_units(size: int, consistent: bool) -> float:
    """Read units of one item (GetItem, BatchGetItem) or one Query's result: per 4 KB begun, half if eventual."""
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


def write_units(size: int) -> int:
    return max(1, math.ceil(size / WRITE_UNIT_BYTES))


def update_index_write_units(new_item: Mapping[str, Mapping[str, Any]]) -> int:
    """Index writes of an order update by the reconciler: the account index's copy, and leaving the reconcile index.

    The account-orders index projects every attribute, so any change
    rewrites its copy; an order updated without a reconcile_shard (done now)
    has its entry deleted from the reconcile index (a write of its own).
    """
    units = write_units(item_size(new_item)) if ACCOUNT_ORDERS_INDEX_PROJECTS_ALL else 0
    return units + (0 if RECONCILE_INDEX_KEY in new_item else 1)


@dataclass
class CapacityMeter:
    """Estimated read and write units of every DynamoDB call through botocore hooks, with the items each read."""

    read: float = 0.0
    written: float = 0.0
    index_items: int = 0  # returned by Query
    orders_read: int = 0  # returned by BatchGetItem
    order_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def attach(self, client: Any) -> None:
        if client.meta.service_model.service_name == "dynamodb":
            # Not before-call: that event carries the serialized request, this one the operation's parameters.
            client.meta.events.register("before-parameter-build", self._note_request)
            client.meta.events.register("after-call", self._measure)

    def reset(self) -> None:
        with self._lock:
            self.read = self.written = 0.0
            self.index_items = self.orders_read = self.order_bytes = 0

    def _note_request(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        # The request's consistency and a put's item are in the parameters only: they ride in the context.
        context["bench_consistent"] = bool(params.get("ConsistentRead"))
        context["bench_batch_consistent"] = {
            table: bool(keys.get("ConsistentRead")) for table, keys in params.get("RequestItems", {}).items()
        }
        if model.name == "PutItem":
            context["bench_put_size"] = item_size(params["Item"])

    def _measure(self, model: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if "Error" in parsed:
            return
        with self._lock:
            if model.name == "Query":
                items = parsed.get("Items", [])
                self.index_items += len(items)
                self.read += read_units(sum(item_size(item) for item in items), context["bench_consistent"])
            elif model.name == "BatchGetItem":
                for table, items in parsed.get("Responses", {}).items():
                    consistent = context["bench_batch_consistent"].get(table, False)
                    sizes = [item_size(item) for item in items]
                    self.orders_read += len(items)
                    self.order_bytes += sum(sizes)
                    self.read += sum(read_units(size, consistent) for size in sizes)
            elif model.name == "GetItem":
                # A missing item is charged as a read all the same.
                self.read += read_units(item_size(parsed.get("Item", {})), context["bench_consistent"])
            elif model.name == "PutItem":
                self.written += write_units(context["bench_put_size"])
            elif model.name == "UpdateItem":
                # PynamoDB asks for ALL_NEW: the updated item is in the answer.
                new_item = parsed.get("Attributes", {})
                self.written += write_units(item_size(new_item)) + update_index_write_units(new_item)


# --- The exchange simulator ---


@dataclass(frozen=True)
class Exchange:
    url: str

    def configure(self, **knobs: float) -> None:
        response = requests.post(f"{self.url}/admin/config", json=knobs, timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()

    def status_requests(self) -> tuple[int, dict[str, int]]:
        """Status queries answered in all, and by client order id."""
        stats = requests.get(f"{self.url}/stats", timeout=HTTP_TIMEOUT_S).json()
        by_order = {order_id: int(counters["status_requests"]) for order_id, counters in stats["orders"].items()}
        return int(stats["status_requests"]), by_order

    def wait_done(self, order_ids: list[str]) -> None:
        """Until the exchange has finished working each order (all its executions made)."""
        pending = set(order_ids)
        deadline = time.monotonic() + DONE_DEADLINE_S
        while pending:
            for order_id in sorted(pending):
                record = requests.get(f"{self.url}/admin/orders/{order_id}", timeout=HTTP_TIMEOUT_S).json()
                if record["execution"] is not None and record["execution"]["done"]:
                    pending.discard(order_id)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} orders not done at the exchange within {DONE_DEADLINE_S}s")
            time.sleep(0.05)


@contextmanager
def exchange_process(output: int) -> Iterator[Exchange]:
    """The simulator on free loopback ports, writing to the file descriptor output: no failures, rejects or
    venue cancels; orders stay open."""
    port, feed_port = free_port(), free_port()
    knobs = {
        "EXCHANGE_FAILURE_RATE": "0",
        "EXCHANGE_LATENCY_S": str(EXCHANGE_LATENCY_S),
        "EXCHANGE_EXEC_DELAY_S": str(OPEN_EXEC_DELAY_S),
        "EXCHANGE_REJECT_RATE": "0",
        "EXCHANGE_CANCEL_RATE": "0",
        "EXCHANGE_SEED": "7",
    }
    # A developer's own knobs must not change what is measured.
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXCHANGE_")}
    with ManagedProcess(
        "exchange",
        python_module("devstack.exchange_sim", "--port", str(port), "--feed-port", str(feed_port)),
        env={**env, **knobs},
        ready_url=f"http://{LOOPBACK}:{port}/health",
        stdout=output,
    ):
        yield Exchange(f"http://{LOOPBACK}:{port}")


@contextmanager
def handler_output(log: IO[str]) -> Iterator[None]:
    """The handlers' log lines and EMF metrics into log instead of stdout, where the tables go.

    The handlers still format and write every line (the cost stays in the
    seconds measured); Powertools' handlers hold the stream they were built
    with, so they are pointed at the log, and metrics are printed.
    """
    handlers = {
        handler
        for name in (observability.logger.name, "chalicelib")
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, logging.StreamHandler)
    }
    previous = {handler: handler.stream for handler in handlers}
    for handler in handlers:
        handler.setStream(log)
    try:
        with contextlib.redirect_stdout(log):
            yield
    finally:
        for handler, stream in previous.items():
            handler.setStream(stream)


# --- The book ---


def add_orders(app: Any, api_key: str, outputs: Mapping[str, str], count: int) -> list[str]:
    """Orders posted through the API and placed through the placement handler; their ids.

    In chunks, each placed and its messages deleted (as Lambda's poller does)
    before the next is posted: moto's SQS slows down as a queue fills.
    """
    sqs = emulator_client("sqs", os.environ["AWS_ENDPOINT_URL"])  # not the app's: not counted
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    body = json.dumps(ORDER)
    placed: list[str] = []
    with Client(app) as client:
        while len(placed) < count:
            chunk = min(PLACEMENT_CHUNK, count - len(placed))
            for _ in range(chunk):
                response = client.http.post("/orders", headers=headers, body=body)
                assert response.status_code == 201, response.body
            messages = receive_placements(outputs["OrdersQueueUrl"], chunk)
            assert len(messages) == chunk, f"{len(messages)} placement messages of {chunk}"
            place_batches(app, messages, outputs["OrdersQueueArn"])
            for start in range(0, chunk, 10):
                entries = [
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(messages[start : start + 10])
                ]
                sqs.delete_message_batch(QueueUrl=outputs["OrdersQueueUrl"], Entries=entries)
            placed += [json.loads(message["Body"])["order_id"] for message in messages]
    return placed


def place_batches(app: Any, messages: list[dict[str, Any]], queue_arn: str) -> None:
    """The placement messages handed to the placement handler in batches of 10, as the SQS mapping does."""
    place = app.handler_map["place_orders"]
    function = FunctionSpec("bench-place_orders")
    for start in range(0, len(messages), 10):
        event = sqs_event(messages[start : start + 10], queue_arn, REGION)
        response = place(event, function.new_context())
        assert response == {"batchItemFailures": []}, response


# --- Runs and passes ---


@dataclass(frozen=True)
class RunFigures:
    """One run of the reconciler."""

    checked: int  # the orders the run asked the exchange about (its own count)
    repaired: int
    exchange_calls: int  # status queries the simulator answered
    calls: dict[str, int]  # DynamoDB calls by operation
    read_units: float
    write_units: float
    index_items: int
    orders_read: int
    seconds: float


@dataclass
class PassFigures:
    """Runs from the cursor at the start of the index until it is back there: one pass over the book."""

    name: str
    book: int
    runs: list[RunFigures] = field(default_factory=list)
    covered: int = 0  # orders of the book asked about at least once in the pass
    order_bytes: int = 0

    def total(self, name: str) -> float:
        return float(sum(getattr(run, name) for run in self.runs))

    def calls(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for run in self.runs:
            total.update(run.calls)
        return total


@dataclass
class Bench:
    """What a pass needs: the app, the exchange, the counters on the app's clients."""

    app: Any
    exchange: Exchange
    counter: CallCounter
    meter: CapacityMeter
    batch: int

    def run_once(self) -> RunFigures:
        before, _ = self.exchange.status_requests()
        self.counter.reset()
        self.meter.reset()
        event = scheduled_event(RULE_ARN, REGION)
        with Stopwatch() as watch:
            answer = reconcile.reconcile(
                event, FunctionSpec("bench-reconcile").new_context(), dependencies=bootstrap.production()
            )
        after, _ = self.exchange.status_requests()
        return RunFigures(
            checked=answer["checked"],
            repaired=answer["repaired"],
            exchange_calls=after - before,
            calls={name: self.counter.calls[name] for name in self.counter.calls},
            read_units=self.meter.read,
            write_units=self.meter.written,
            index_items=self.meter.index_items,
            orders_read=self.meter.orders_read,
            seconds=watch.seconds,
        )

    def one_pass(self, name: str, book: list[str]) -> PassFigures:
        """Runs until the cursor is back at the start of the index (it must be there when the pass begins)."""
        cursor = bootstrap.reconciler_cursor()  # a client of its own: not counted
        assert cursor.load() in (None, CURSOR_AT_START), cursor.load()
        _, asked_before = self.exchange.status_requests()
        figures = PassFigures(name, len(book))
        # A pass takes ceil(book / batch) runs, and one more when the last budget ends exactly at the index's end.
        for _ in range(math.ceil(len(book) / self.batch) + 2):
            figures.runs.append(self.run_once())
            figures.order_bytes += self.meter.order_bytes
            if cursor.load() == CURSOR_AT_START:
                break
        else:
            raise RuntimeError(f"pass {name!r}: the cursor did not come back to the start")
        _, asked_after = self.exchange.status_requests()
        figures.covered = sum(1 for order_id in book if asked_after.get(order_id, 0) > asked_before.get(order_id, 0))
        return figures


# --- Output ---


def exchange_floor_s(checked: int) -> float:
    """The least a run can take: its status queries, RECONCILE_THREADS at a time, one round trip each."""
    return math.ceil(checked / RECONCILE_THREADS) * EXCHANGE_LATENCY_S


def print_runs(passes: list[PassFigures]) -> None:
    rows = []
    for figures in passes:
        for number, run in enumerate(figures.runs, 1):
            rows.append(
                [
                    figures.name,
                    number,
                    run.checked,
                    run.repaired,
                    run.exchange_calls,
                    *(run.calls.get(name, 0) for name in DYNAMODB_OPERATIONS),
                    sum(run.calls.values()),
                    f"{run.index_items} / {run.orders_read}",
                    f"{run.read_units:.1f}",
                    f"{run.write_units:.0f}",
                    f"{run.seconds:.2f}",
                    f"{exchange_floor_s(run.checked):.2f}",
                ]
            )
    headers = ["pass", "run", "checked", "repaired", "exchange calls", *DYNAMODB_OPERATIONS, "AWS calls"]
    headers += ["index items / orders read", "read units", "write units", "s", "exchange floor s"]
    print(f"\n### Per run (moto server; exchange round trip {EXCHANGE_LATENCY_S} s, {RECONCILE_THREADS} threads)\n")
    print(markdown_table(headers, rows))


def print_passes(passes: list[PassFigures], batch: int) -> None:
    rows = []
    for figures in passes:
        checked = figures.total("checked") or 1
        calls = figures.calls()
        rows.append(
            [
                figures.name,
                figures.book,
                len(figures.runs),
                f"{figures.covered}/{figures.book}",
                int(figures.total("repaired")),
                f"{figures.total('exchange_calls') / checked:.2f}",
                f"{sum(calls.values()) / checked:.3f}",
                f"{figures.total('read_units') / checked:.3f}",
                f"{figures.total('write_units') / checked:.3f}",
                f"{figures.total('seconds') / len(figures.runs):.2f}",
                f"{1000 * figures.total('seconds') / checked:.1f}",
            ]
        )
    headers = ["pass", "book", "runs", "orders asked", "repaired", "exchange calls/order", "AWS calls/order"]
    headers += ["read units/order", "write units/order", "s/run", "ms/order"]
    print(f"\n### Per pass over the book (RECONCILE_BATCH {batch})\n")
    print(markdown_table(headers, rows))
    orders_read = sum(figures.total("orders_read") for figures in passes)
    if orders_read:
        order_bytes = sum(figures.order_bytes for figures in passes)
        print(f"\nmean order item read by BatchGetItem: {order_bytes / orders_read:.0f} bytes")


def print_per_day(steady: PassFigures, venue_latency_s: float = 0.5) -> None:
    """A day of runs at the configured interval over this book, from the steady pass's mean run."""
    settings = get_settings()
    runs = 24 * 60 // settings.reconcile_interval_min
    per_run = {name: steady.total(name) / len(steady.runs) for name in ("checked", "read_units", "write_units")}
    # Lambda's duration on AWS is the venue's round trips, RECONCILE_THREADS at a time.
    venue_s = [math.ceil(run.checked / RECONCILE_THREADS) * venue_latency_s for run in steady.runs]
    run_seconds = sum(venue_s) / len(venue_s)
    costs = {
        "DynamoDB reads": runs * per_run["read_units"] * PRICES["dynamodb_read_unit"],
        "DynamoDB writes": runs * per_run["write_units"] * PRICES["dynamodb_write_unit"],
        "Lambda": runs * (PRICES["lambda_request"] + PRICES["lambda_gb_second"] * LAMBDA_MEMORY_GB * run_seconds),
    }
    interval = settings.reconcile_interval_min
    print(
        f"\n### A day of runs every {interval} min over the steady book of {steady.book} "
        f"(each order asked every {interval * len(steady.runs)} min), us-east-1 list prices\n"
    )
    rows: list[list[Any]] = [
        ["runs", runs],
        ["exchange status queries", round(runs * per_run["checked"])],
        ["DynamoDB read units", round(runs * per_run["read_units"])],
        [f"Lambda seconds per run at {venue_latency_s} s per venue round trip", f"{run_seconds:.1f}"],
        *([f"USD: {name}", f"{value:.4f}"] for name, value in costs.items()),
        ["USD: total", f"{sum(costs.values()):.4f}"],
    ]
    print(markdown_table(["per day", "figure"], rows))


# --- Main ---


def measure(orders: int, batch: int, log: IO[str]) -> list[PassFigures]:
    lost = max(1, round(orders * LOST_SHARE))
    # Before the app is imported: the settings are read once, at its import.
    os.environ["RECONCILE_BATCH"] = str(batch)
    # The book is built moments before the runs: they measure checking it, not waiting for it to settle.
    os.environ["RECONCILE_SETTLE_S"] = "0"
    with bench_stack("bench-reconcile") as outputs, exchange_process(log.fileno()) as exchange, handler_output(log):
        os.environ["EXCHANGE_URL"] = exchange.url
        from app import app  # noqa: PLC0415 - reads its settings at import, after the env is set

        counter, meter = CallCounter(), CapacityMeter()
        api_key = counted_clients(counter)
        for client in bootstrap.aws_clients(bootstrap.production()):
            meter.attach(client)
        bench = Bench(app, exchange, counter, meter, batch)

        print(f"creating and placing {orders} open orders...", file=sys.stderr)
        book = add_orders(app, api_key, outputs, orders)
        passes = [bench.one_pass("steady", book)]

        print(f"placing {lost} more, filled at the exchange with no feed bridge running...", file=sys.stderr)
        exchange.configure(exec_delay_s=FILLING_EXEC_DELAY_S)
        filled = add_orders(app, api_key, outputs, lost)
        exchange.configure(exec_delay_s=OPEN_EXEC_DELAY_S)
        exchange.wait_done(filled)
        passes.append(bench.one_pass(f"lost reports ({lost} filled)", book + filled))
        passes.append(bench.one_pass("after repair", book))
    return passes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=None, help=f"open orders in the book (default {FULL_ORDERS})")
    parser.add_argument("--quick", action="store_true", help=f"a small book: {QUICK_ORDERS} orders")
    parser.add_argument("--batch", type=int, default=200, help="RECONCILE_BATCH: orders per run")
    parser.add_argument("--log", type=Path, default=LOG_PATH, help="where the handlers' and simulator's output goes")
    args = parser.parse_args(argv)
    orders = args.orders or (QUICK_ORDERS if args.quick else FULL_ORDERS)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    # Appending: the simulator writes to the same file through a descriptor of its own.
    args.log.unlink(missing_ok=True)
    with args.log.open("a", buffering=1) as log:
        passes = measure(orders, args.batch, log)
    print_runs(passes)
    print_passes(passes, args.batch)
    print_per_day(passes[0])
    print(f"\nhandler and simulator output: {args.log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
