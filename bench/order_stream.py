"""The order stream on the whole stack (`make run`'s processes): latency from the exchange's execution report to the
client's WebSocket message (p50, p99) and events delivered per second, beside the Kinesis consumer's own throughput
in the same run.

Orders are POSTed at a steady rate as one account while a few real `websockets` clients of that account listen.
Every fill event carries its execution, whose time is the simulator's transact_time: the moment the exchange
made the report (same host, same clock). A client stamps each message as it reads it. The consumers' own figures
come from the runner's log, one line per invocation with its records and duration: the Kinesis consumer
(apply_executions, execution reports) and the DynamoDB Streams consumer that logs and pushes the events
(publish_order_events). `--quick` is a short run. Figures go to stdout as markdown.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import markdown_table, percentile
from devstack.processes import free_port
from devstack.stack import DEMO_LIMITS, DEMO_RATE_LIMIT, LocalStack, local_stack
from devstack.stream_client import Account, Received, StreamClient, stream_url_of

KINESIS_CONSUMER = "apply_executions"
STREAM_CONSUMER = "publish_order_events"
EXECUTION_TYPES = frozenset({"partial_fill", "fill"})
FINAL_TYPES = frozenset({"fill", "canceled", "rejected", "expired", "failed"})
ISINS = ("US0378331005", "DE0007164600", "US5949181045")
# The runner's line for each invocation of a stream consumer (devstack/runner/kinesis.py).
INVOCATION_LINE = re.compile(r"invoked (?P<function>\S+) shard=\S+ records=(?P<records>\d+) .*?duration_ms=(?P<ms>\d+)")
LOG_LINE_TIME = re.compile(r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
DELIVERY_TIMEOUT_S = 120.0
LISTEN_TIMEOUT_S = 30.0
LOG_PATH = Path("build/bench/order_stream.log")


# --- Pure figures (tests/unit/bench/test_order_stream.py) ---


def timestamp(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time (a trailing Z included)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def first_arrivals(received: Iterable[Received]) -> list[Received]:
    """Each event's first message only: what a client that dedupes by id acts on."""
    seen: set[str] = set()
    firsts = []
    for item in received:
        event = item.message.get("event")
        if isinstance(event, Mapping) and event["id"] not in seen:
            seen.add(event["id"])
            firsts.append(item)
    return firsts


@dataclass(frozen=True)
class Latencies:
    """Seconds per fill event (first arrivals): from the exchange's report to the client, and its two legs."""

    report_to_client: list[float] = field(default_factory=list)
    # The report to our order's update (its updated_at, the event's time): feed, bridge, Kinesis, apply_executions.
    report_to_order: list[float] = field(default_factory=list)
    # The order's update to the client's message: the DynamoDB stream, publish_order_events, the push.
    order_to_client: list[float] = field(default_factory=list)

    def extend(self, other: Latencies) -> None:
        self.report_to_client.extend(other.report_to_client)
        self.report_to_order.extend(other.report_to_order)
        self.order_to_client.extend(other.order_to_client)


def report_to_client_latencies(received: Iterable[Received]) -> Latencies:
    """Each execution's report at the exchange (its transact_time) to its event's first arrival, and the legs."""
    latencies = Latencies()
    for item in first_arrivals(received):
        event = item.message["event"]
        if event["type"] not in EXECUTION_TYPES or not event.get("execution"):
            continue  # no report to time from (created, placed, a correction without a report)
        reported, updated = timestamp(event["execution"]["time"]), timestamp(event["time"])
        latencies.report_to_client.append(item.at - reported)
        latencies.report_to_order.append(updated - reported)
        latencies.order_to_client.append(item.at - updated)
    return latencies


@dataclass(frozen=True)
class Delivery:
    """Events delivered to the clients: how many (first arrivals, all clients), over which seconds, repeats."""

    events: int
    messages: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def delivery(clients_received: Sequence[Sequence[Received]]) -> Delivery:
    """Events per second delivered, all clients together, from the first event's arrival to the last one's."""
    firsts = [item for received in clients_received for item in first_arrivals(received)]
    messages = sum(1 for received in clients_received for item in received if "event" in item.message)
    if not firsts:
        return Delivery(0, messages, 0.0)
    times = [item.at for item in firsts]
    return Delivery(len(firsts), messages, max(times) - min(times))


@dataclass(frozen=True)
class ConsumerFigures:
    """A stream consumer's invocations in the run: records handled, seconds inside the handler, seconds of the run."""

    function: str
    invocations: int
    records: int
    handler_s: float
    window_s: float

    @property
    def records_per_handler_second(self) -> float:
        """The consumer's own throughput: what one invocation at a time gets through while it runs."""
        return self.records / self.handler_s if self.handler_s > 0 else float("nan")

    @property
    def records_per_second(self) -> float:
        """Records per second of the run: bounded by what arrived, not by the consumer."""
        return self.records / self.window_s if self.window_s > 0 else float("nan")


def consumer_figures(lines: Iterable[str], function: str) -> ConsumerFigures:
    """The function's invocations in the runner's log lines (others', and non-invocation lines, ignored)."""
    invocations = records = 0
    handler_ms = 0.0
    times: list[float] = []
    for line in lines:
        match = INVOCATION_LINE.search(line)
        if match is None or match["function"] != function:
            continue
        invocations += 1
        records += int(match["records"])
        handler_ms += float(match["ms"])
        at = LOG_LINE_TIME.match(line)
        if at is not None:
            times.append(datetime.strptime(at["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    window_s = max(times) - min(times) if len(times) > 1 else 0.0
    return ConsumerFigures(function, invocations, records, handler_ms / 1000, window_s)


# --- The run ---


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run: fewer orders")
    parser.add_argument("--orders", type=int, help="orders POSTed (default 150, quick 45)")
    # About 4 order changes each: at 3/s the DynamoDB Streams consumer on moto (10-20 records/s
    # measured) keeps up, so the latency is the path's, not a backlog's. At 10/s it falls behind,
    # its 100-record event log transactions outlast the 3 s read timeout, and the batch is retried.
    parser.add_argument("--rate", type=float, default=3.0, help="POSTs per second")
    parser.add_argument("--clients", type=int, default=4, help="stream clients of the account")
    parser.add_argument("--exec-delay", type=float, default=0.3, help="the simulator's delay between an order's steps")
    args = parser.parse_args(argv)
    args.orders = args.orders or (45 if args.quick else 150)
    return args


def post_at_rate(account: Account, count: int, rate: float, seed: int = 7) -> list[str]:
    """POST count market orders, rate per second at most, from a few threads; their ids."""
    rng = random.Random(seed)
    bodies = [{"instrument": rng.choice(ISINS), "quantity": rng.randint(1, 60)} for _ in range(count)]
    started = time.monotonic()
    lock = threading.Lock()
    slots = iter(range(count))

    def post(body: dict[str, Any]) -> str:
        with lock:
            slot = next(slots)
        time.sleep(max(0.0, started + slot / rate - time.monotonic()))
        return str(account.post_order(**body)["id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(post, bodies))


def every_order_final(client: StreamClient, order_ids: set[str]) -> bool:
    return {e["order"]["id"] for e in client.event_list() if e["type"] in FINAL_TYPES} >= order_ids


def final_events_missing(client: StreamClient, order_ids: set[str]) -> int:
    return len(order_ids - {e["order"]["id"] for e in client.event_list() if e["type"] in FINAL_TYPES})


def measure(stack: LocalStack, args: argparse.Namespace) -> tuple[list[list[Received]], float]:
    """Listen with the clients, POST the orders, wait until every client has every order's final event.

    A run that does not get there within DELIVERY_TIMEOUT_S still reports what was delivered, and says so.
    """
    account_id = f"bench-stream-{os.getpid()}"
    key = stack.new_api_key(account_id)
    stack.set_limits(account_id, DEMO_LIMITS)
    stack.set_rate_limit(account_id, DEMO_RATE_LIMIT)  # a --rate above a new account's 10/s is not throttled
    account = Account(stack.api_url, stream_url_of(stack), account_id, key)
    clients = [account.stream().connect() for _ in range(args.clients)]
    try:
        for client in clients:
            client.listen_and_wait(timeout_s=LISTEN_TIMEOUT_S)
        started = time.monotonic()
        order_ids = set(post_at_rate(account, args.orders, args.rate))
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        for client in clients:
            try:
                client.wait_for(partial(every_order_final, client, order_ids), deadline - time.monotonic())
            except AssertionError:
                missing = final_events_missing(client, order_ids)
                print(f"INCOMPLETE: a client lacks {missing} of {len(order_ids)} final events", file=sys.stderr)
        return [list(client.received) for client in clients], time.monotonic() - started
    finally:
        for client in clients:
            client.close()


def _spread_ms(values: Sequence[float]) -> str:
    ms = [1000 * value for value in values]
    return f"p50 {percentile(ms, 50):,.0f} · p99 {percentile(ms, 99):,.0f} · max {max(ms, default=float('nan')):,.0f}"


def figures_table(latencies: Latencies, delivered: Delivery, consumers: Sequence[ConsumerFigures], clients: int) -> str:
    samples = f"{len(latencies.report_to_client):,} fill events x client"
    rows = [
        ["report -> client message (ms)", _spread_ms(latencies.report_to_client), samples],
        ["leg 1: report -> order (ms)", _spread_ms(latencies.report_to_order), "feed, bridge, Kinesis, apply"],
        ["leg 2: order -> client (ms)", _spread_ms(latencies.order_to_client), "DynamoDB Streams, publish, push"],
        [
            f"events delivered ({clients} clients)",
            f"{delivered.per_second:,.1f} events/s",
            f"{delivered.events:,} events in {delivered.seconds:.1f} s; "
            f"{delivered.messages - delivered.events} repeats",
        ],
    ]
    for consumer in consumers:
        rows.append(
            [
                f"{consumer.function} (runner log)",
                f"{consumer.records_per_handler_second:,.0f} records/s in the handler",
                f"{consumer.records:,} records, {consumer.invocations:,} invocations, "
                f"{consumer.records_per_second:,.1f} records/s over {consumer.window_s:.0f} s of the run",
            ]
        )
    return markdown_table(["figure", "value", "of"], rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m bench.order_stream" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    overrides = {
        "RESOURCE_PREFIX": "bench-stream",
        "EXCHANGE_FAILURE_RATE": "0",
        "EXCHANGE_LATENCY_S": "0.05",
        "EXCHANGE_EXEC_DELAY_S": str(args.exec_delay),
        "EXCHANGE_REJECT_RATE": "0",
        "EXCHANGE_CANCEL_RATE": "0",
    }
    # Kept after the run: the consumers' figures come from it, and a stalled run is explained by it.
    LOG_PATH.parent.mkdir(parents=True, exist_ok=True)
    with (
        LOG_PATH.open("wb") as log,
        local_stack(
            free_port(), free_port(), free_port(), schedule_interval_s=60, overrides=overrides, log=log
        ) as stack,
    ):
        print(f"stack log: {LOG_PATH}", file=sys.stderr, flush=True)
        received, seconds = measure(stack, args)
    lines = LOG_PATH.read_text(errors="replace").splitlines()
    latencies = Latencies()
    for client in received:
        latencies.extend(report_to_client_latencies(client))
    consumers = [consumer_figures(lines, name) for name in (KINESIS_CONSUMER, STREAM_CONSUMER)]
    print(f"Whole stack on moto server (in memory), all processes on 127.0.0.1; {date.today()}, `{command}`.")
    print(
        f"{args.orders} market orders at {args.rate:g}/s as one account, {args.clients} stream clients listening; "
        f"the simulator's steps {args.exec_delay} s apart; {seconds:.1f} s from the first POST until every client "
        "had every order's final event (or the wait ended: see INCOMPLETE above).\n"
    )
    print(figures_table(latencies, delivery(received), consumers, args.clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
