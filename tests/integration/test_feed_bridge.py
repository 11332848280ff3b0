"""The feed bridge as a real process: a scripted WebSocket feed on loopback in, the moto server's Kinesis out."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module
from devstack.provision import provision

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
# Deadlines only stop a broken bridge from hanging the suite; nothing is
# asserted about how fast it is.
DEADLINE_S = 60.0
POLL_S = 0.05


# --- a scripted feed ------------------------------------------------------------------


def make_reports(count: int, tag: str, orders: int = 25) -> list[str]:
    """count reports as the feed's text frames, seq 1..count; odd spacing so that any reshaping shows."""
    texts = []
    for seq in range(1, count + 1):
        report = {
            "seq": seq,
            "exec_id": f"{tag}-e{seq}",
            "client_order_id": f"{tag}-o{seq % orders}",
            "exchange_order_id": f"x{seq % orders}",
            "exec_type": "partial_fill",
            "last_qty": 1,
            "last_price": "187.2500",
            "cum_qty": seq,
            "leaves_qty": 10,
            "avg_price": "187.2500",
            "transact_time": "2026-11-23T21:07:06.123Z",
        }
        texts.append(json.dumps(report, separators=(" ,", ":  ")))
    return texts


class FakeFeed:
    """A websockets server on loopback, in a thread of its own, serving scripted reports.

    A connection gets every report with seq >= from_seq, in `live_order` on the
    first connection (repeats and swaps allowed, like the simulator's knobs)
    and in seq order on later ones (a replay), paced by pace_s, then stays open
    idle. drop() aborts open connections without a closing handshake, as a
    network failure would.
    """

    def __init__(
        self, reports: Sequence[str], live_order: Sequence[int] | None = None, pace_s: float = 0.0, port: int = 0
    ) -> None:
        self.reports = list(reports)
        self.live_order = list(live_order) if live_order is not None else list(range(1, len(reports) + 1))
        self.pace_s = pace_s
        self.port = port or free_port()
        self.from_seqs: list[int] = []
        self.sent: list[int] = []  # reports sent, per connection
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopped: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/feed"

    def start(self) -> FakeFeed:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="fake-feed", daemon=True)
        self._thread.start()
        assert self._started.wait(DEADLINE_S), "fake feed did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(DEADLINE_S)

    def drop(self) -> None:
        assert self._loop is not None

        def abort() -> None:
            assert self._server is not None
            for connection in self._server.connections:
                connection.transport.abort()

        self._loop.call_soon_threadsafe(abort)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        async with serve(self._handle, LOOPBACK, self.port) as server:
            self._server = server
            self._started.set()
            await self._stopped.wait()

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        query = parse_qs(urlsplit(connection.request.path).query)
        from_seq = int(query.get("from_seq", ["1"])[0])
        first = not self.from_seqs
        self.from_seqs.append(from_seq)
        self.sent.append(0)
        connection_index = len(self.sent) - 1
        order = self.live_order if first else range(1, len(self.reports) + 1)
        with contextlib.suppress(ConnectionClosed):
            for seq in order:
                if seq >= from_seq:
                    await connection.send(self.reports[seq - 1])
                    self.sent[connection_index] += 1
                    if self.pace_s:
                        await asyncio.sleep(self.pace_s)
            await connection.wait_closed()


@contextlib.contextmanager
def running_feed(*args: Any, **kwargs: Any) -> Iterator[FakeFeed]:
    feed = FakeFeed(*args, **kwargs).start()
    try:
        yield feed
    finally:
        feed.stop()


# --- AWS side -------------------------------------------------------------------------------


@dataclass
class Stack:
    stream: str
    table: str
    kinesis: Any
    dynamodb: Any
    # The venue credential's secret (devstack.provision creates it on moto): the bridge reads it to connect.
    credential_secret: str = ""

    def checkpoint(self, feed_id: str) -> int | None:
        item = self.dynamodb.get_item(TableName=self.table, Key={"feed_id": {"S": feed_id}}, ConsistentRead=True)
        return int(item["Item"]["seq"]["N"]) if "Item" in item else None

    def checkpoint_item(self, feed_id: str) -> dict[str, Any]:
        return dict(self.dynamodb.get_item(TableName=self.table, Key={"feed_id": {"S": feed_id}})["Item"])

    def records(self) -> list[tuple[str, bytes]]:
        """(partition key, data) of every record on every shard, from the start."""
        found: list[tuple[str, bytes]] = []
        for shard in self.kinesis.list_shards(StreamName=self.stream)["Shards"]:
            iterator = self.kinesis.get_shard_iterator(
                StreamName=self.stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while True:
                page = self.kinesis.get_records(ShardIterator=iterator, Limit=10_000)
                if not page["Records"]:
                    break
                found.extend((r["PartitionKey"], r["Data"]) for r in page["Records"])
                iterator = page["NextShardIterator"]
        return found

    def seq_counts(self) -> Counter[int]:
        return Counter(json.loads(data)["seq"] for _, data in self.records())


@pytest.fixture
def stack(aws_endpoint: str) -> Stack:
    """A stack of our own per test: its stream holds only that test's records."""
    prefix = f"fb-{uuid.uuid4().hex[:8]}"
    outputs = provision(aws_endpoint, stack_name=prefix, parameters={"ResourcePrefix": prefix})
    return Stack(
        outputs["ExecutionsStreamName"],
        outputs["FeedCheckpointsTableName"],
        boto3.client("kinesis", endpoint_url=aws_endpoint),
        boto3.client("dynamodb", endpoint_url=aws_endpoint),
        outputs["ExchangeCredentialSecretName"],
    )


def assert_all_on_stream_unchanged(stack: Stack, reports: Sequence[str]) -> Counter[int]:
    """Every report is on the stream, under its client_order_id, byte for byte; returns the count per seq."""
    by_seq: dict[int, set[tuple[str, bytes]]] = {}
    for key, data in stack.records():
        by_seq.setdefault(json.loads(data)["seq"], set()).add((key, data))
    missing = [seq for seq in range(1, len(reports) + 1) if seq not in by_seq]
    assert not missing, f"{len(missing)} reports missing, first {missing[:10]}"
    for seq, text in enumerate(reports, start=1):
        expected = (json.loads(text)["client_order_id"], text.encode())
        assert by_seq[seq] == {expected}, f"seq {seq}: {by_seq[seq]} != {expected}"
    return stack.seq_counts()


# --- the bridge as a process ------------------------------------------------------------------


class BridgeProcess:
    """`python -m feed_bridge` with its output in a file; stopped (whole process group) on exit."""

    def __init__(self, stack: Stack, feed_url: str, feed_id: str, log: Path, **overrides: str) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "EXCHANGE_FEED_URL": feed_url,
            "EXECUTIONS_STREAM_NAME": stack.stream,
            "FEED_CHECKPOINTS_TABLE_NAME": stack.table,
            "EXCHANGE_CREDENTIAL_SECRET_NAME": stack.credential_secret,
            "FEED_ID": feed_id,
            "FEED_STATS_INTERVAL_S": "0.2",
            "LOG_LEVEL": "DEBUG",
            **overrides,
        }
        self.log = log
        self._out = log.open("ab")
        self.process = ManagedProcess(
            "feed_bridge", python_module("feed_bridge"), env=env, cwd=str(REPO_ROOT), stdout=self._out
        )

    def start(self, wait_ready: bool = True) -> BridgeProcess:
        self.process.start()
        if wait_ready:
            self.wait_for_output("feed bridge ready")
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, start: int = 0) -> None:
        wait_until(lambda: text in self.output()[start:], f"bridge output {text!r}", self)

    def exit_code(self) -> int:
        assert self.process.process is not None
        return self.process.process.wait(timeout=DEADLINE_S)

    def close(self) -> None:
        pgid = self.process.process.pid if self.process.process else None
        self.process.stop()
        self._out.close()
        if pgid is not None:
            # No orphans: the process group is empty once stop() returns.
            with pytest.raises(ProcessLookupError):
                os.killpg(pgid, 0)


@contextlib.contextmanager
def bridge(*args: Any, wait_ready: bool = True, **kwargs: Any) -> Iterator[BridgeProcess]:
    process = BridgeProcess(*args, **kwargs)
    try:
        yield process.start(wait_ready)
    finally:
        process.close()


def wait_until(condition: Callable[[], Any], what: str, process: BridgeProcess | None = None) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and not process.process.alive() and not condition():
            raise AssertionError(f"bridge exited before {what}:\n{process.output()[-4000:]}")
        time.sleep(POLL_S)
    tail = process.output()[-4000:] if process else ""
    raise AssertionError(f"no {what} within {DEADLINE_S}s\n{tail}")


@pytest.fixture
def feed_id() -> str:
    return f"feed-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "bridge.log"


# --- tests ------------------------------------------------------------------------------------


def test_every_report_reaches_the_stream_once_and_the_checkpoint_is_the_last_seq(
    stack: Stack, feed_id: str, log: Path
) -> None:
    reports = make_reports(300, feed_id)
    # A live stream with the simulator's knobs on: repeats and swapped neighbours.
    live = list(range(1, 301))
    live[10], live[11] = live[11], live[10]
    live[200], live[201] = live[201], live[200]
    live[50:50] = [50, 49]
    live.append(300)

    with running_feed(reports, live_order=live) as feed, bridge(stack, feed.url, feed_id, log) as process:
        wait_until(lambda: stack.checkpoint(feed_id) == 300, "checkpoint 300", process)
        process.process.signal(signal.SIGTERM)
        assert process.exit_code() == 0

    counts = assert_all_on_stream_unchanged(stack, reports)
    assert set(counts.values()) == {1}  # the feed's repeats were not put again
    assert feed.from_seqs == [1]
    item = stack.checkpoint_item(feed_id)
    assert item["updated_at"]["S"].endswith("Z")
    assert "flushed" in process.output()  # one DEBUG line per flush


def test_sigkill_mid_stream_then_restart_resumes_from_the_checkpoint(stack: Stack, feed_id: str, log: Path) -> None:
    total = 3000
    reports = make_reports(total, feed_id)

    with running_feed(reports, pace_s=0.001) as feed:
        with bridge(stack, feed.url, feed_id, log) as first:
            wait_until(lambda: (stack.checkpoint(feed_id) or 0) >= 300, "a first checkpoint", first)
            first.process.kill()
        checkpoint_at_kill = stack.checkpoint(feed_id)
        assert checkpoint_at_kill is not None
        on_stream_at_kill = stack.seq_counts()
        assert checkpoint_at_kill < total, "the bridge finished before the kill: nothing tested"

        with bridge(stack, feed.url, feed_id, log) as second:
            wait_until(lambda: stack.checkpoint(feed_id) == total, f"checkpoint {total}", second)

    assert feed.from_seqs == [1, checkpoint_at_kill + 1]
    counts = assert_all_on_stream_unchanged(stack, reports)
    duplicated = {seq for seq, count in counts.items() if count > 1}
    # Only the tail that was on Kinesis but above the stored checkpoint went twice.
    assert all(seq > checkpoint_at_kill and on_stream_at_kill[seq] == 1 for seq in duplicated)
    assert max(counts.values()) <= 2


def test_dropped_connection_reconnects_from_checkpoint_plus_one(stack: Stack, feed_id: str, log: Path) -> None:
    reports = make_reports(2000, feed_id)

    with running_feed(reports, pace_s=0.001) as feed, bridge(stack, feed.url, feed_id, log) as process:
        stored_before_drop = wait_until(lambda: stack.checkpoint(feed_id) or 0, "a first checkpoint", process)
        feed.drop()
        wait_until(lambda: len(feed.from_seqs) >= 2, "a reconnect", process)
        wait_until(lambda: stack.checkpoint(feed_id) == 2000, "checkpoint 2000", process)

    # Resumed right after what the bridge had on Kinesis (at least what was
    # checkpointed, at most what it had been sent), not from the start.
    assert stored_before_drop > 0
    assert stored_before_drop + 1 <= feed.from_seqs[1] <= feed.sent[0] + 1
    counts = assert_all_on_stream_unchanged(stack, reports)
    assert set(counts.values()) == {1}  # resent reports it already had were skipped
    assert "feed connection" in process.output()


def test_bridge_started_before_the_feed_keeps_retrying_then_connects(stack: Stack, feed_id: str, log: Path) -> None:
    reports = make_reports(20, feed_id)
    port = free_port()

    with bridge(stack, f"ws://{LOOPBACK}:{port}/feed", feed_id, log, wait_ready=False) as process:
        wait_until(lambda: process.output().count("reconnecting in") >= 3, "three failed connects", process)
        assert "feed bridge ready" not in process.output()
        with running_feed(reports, port=port):
            process.wait_for_output("feed bridge ready")
            wait_until(lambda: stack.checkpoint(feed_id) == 20, "checkpoint 20", process)

    assert_all_on_stream_unchanged(stack, reports)


def test_sigterm_flushes_the_buffer_writes_the_checkpoint_and_exits_0(stack: Stack, feed_id: str, log: Path) -> None:
    reports = make_reports(50, feed_id)

    # The longest linger: nothing is flushed for a minute unless shutdown flushes it.
    with running_feed(reports) as feed, bridge(stack, feed.url, feed_id, log, FEED_LINGER_S="60") as process:
        process.wait_for_output("last seq 50,")
        assert stack.records() == []
        assert stack.checkpoint(feed_id) is None
        process.process.signal(signal.SIGTERM)
        assert process.exit_code() == 0

    assert "stopped cleanly" in process.output()
    assert stack.checkpoint(feed_id) == 50
    assert set(assert_all_on_stream_unchanged(stack, reports).values()) == {1}


def test_missing_stream_is_a_configuration_error(stack: Stack, feed_id: str, log: Path) -> None:
    with running_feed(make_reports(1, feed_id)) as feed:
        process = BridgeProcess(stack, feed.url, feed_id, log, EXECUTIONS_STREAM_NAME=f"{stack.stream}-missing").start(
            wait_ready=False
        )
        try:
            assert process.exit_code() == 2
        finally:
            process.close()
    assert "does not exist" in process.output()


# --- in process, with Kinesis refusing part of each batch -------------------------------------------


def test_partial_putrecords_failures_are_retried_until_every_report_is_in(
    stack: Stack, feed_id: str, aws_endpoint: str
) -> None:
    """moto never fails an entry, so a wrapper refuses every third record on its first try (as throttling would)."""
    from feed_bridge.bridge import FeedBridge
    from feed_bridge.checkpoint import DynamoDBCheckpointStore
    from feed_bridge.kinesis_sink import KinesisSink
    from feed_bridge.records import Record
    from feed_bridge.settings import BridgeSettings

    class ThrottlingSink(KinesisSink):
        def __init__(self) -> None:
            super().__init__(stack.stream, client=stack.kinesis)
            self.refused: Counter[int] = Counter()

        def put_records(self, records: Sequence[Record]) -> Sequence[str | None]:
            refuse = [r.seq % 3 == 0 and not self.refused[r.seq] for r in records]
            passed = iter(super().put_records([r for r, no in zip(records, refuse, strict=True) if not no]))
            answer: list[str | None] = []
            for r, no in zip(records, refuse, strict=True):
                if no:
                    self.refused[r.seq] += 1
                    answer.append("ProvisionedThroughputExceededException")
                else:
                    answer.append(next(passed))
            return answer

    reports = make_reports(600, feed_id)
    with running_feed(reports) as feed:
        settings = BridgeSettings(
            exchange_feed_url=feed.url,  # type: ignore[arg-type]
            executions_stream_name=stack.stream,
            feed_checkpoints_table_name=stack.table,
            feed_id=feed_id,
            feed_batch_size=100,
            feed_put_retry_min_s=0.01,
            feed_put_retry_max_s=0.05,
        )
        sink = ThrottlingSink()
        bridge_ = FeedBridge(
            settings, sink, DynamoDBCheckpointStore(stack.table, feed_id, client=stack.dynamodb), stdout=io.StringIO()
        )

        async def scenario() -> bool:
            stop = asyncio.Event()
            running = asyncio.create_task(bridge_.run(stop))
            deadline = time.monotonic() + DEADLINE_S
            while bridge_.stored_checkpoint < 600 and time.monotonic() < deadline and not running.done():
                await asyncio.sleep(POLL_S)
            stop.set()
            return await running

        assert asyncio.run(scenario()) is True

    assert len(sink.refused) == 200
    assert bridge_.stats.put_retries == 200
    assert stack.checkpoint(feed_id) == 600
    assert set(assert_all_on_stream_unchanged(stack, reports).values()) == {1}


def test_shutdown_with_kinesis_down_gives_up_after_the_grace_and_keeps_the_checkpoint(
    feed_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """In process, with in-memory fakes for both AWS sides: nothing is lost, the next start replays it."""
    from feed_bridge.bridge import FeedBridge
    from feed_bridge.records import Record
    from feed_bridge.retry import SinkError
    from feed_bridge.settings import BridgeSettings

    class DownSink:
        def __init__(self) -> None:
            self.attempts = 0

        def put_records(self, records: Sequence[Record]) -> Sequence[str | None]:
            self.attempts += 1
            raise SinkError("EndpointConnectionError", "Kinesis unreachable")

    class MemoryCheckpoints:
        def __init__(self) -> None:
            self.seq = 0

        def load(self) -> int:
            return self.seq

        def save(self, seq: int) -> int:
            self.seq = max(self.seq, seq)
            return self.seq

    with running_feed(make_reports(10, feed_id)) as feed:
        settings = BridgeSettings(
            exchange_feed_url=feed.url,  # type: ignore[arg-type]
            executions_stream_name="unused",
            feed_checkpoints_table_name="unused",
            feed_id=feed_id,
            feed_linger_s=0,
            feed_put_retry_min_s=0.01,
            feed_put_retry_max_s=0.05,
            feed_shutdown_grace_s=0.5,
        )
        sink, checkpoints = DownSink(), MemoryCheckpoints()
        bridge_ = FeedBridge(settings, sink, checkpoints, stdout=io.StringIO())

        async def scenario() -> bool:
            stop = asyncio.Event()
            running = asyncio.create_task(bridge_.run(stop))
            deadline = time.monotonic() + DEADLINE_S
            while (bridge_.stats.received < 10 or sink.attempts < 3) and time.monotonic() < deadline:
                await asyncio.sleep(POLL_S)
            stop.set()
            return await asyncio.wait_for(running, DEADLINE_S)

        with caplog.at_level(logging.INFO, logger="feed_bridge"):
            assert asyncio.run(scenario()) is False  # an unclean stop: exit status 1 from the CLI
    assert "stopped with 10 reports not on Kinesis" in caplog.text
    assert checkpoints.seq == 0
    assert bridge_.stats.put == 0


# --- against the real exchange simulator ------------------------------------------------------------


@contextlib.contextmanager
def exchange_simulator(log: Path, knobs: dict[str, str]) -> Iterator[tuple[str, str]]:
    """devstack.exchange_sim on free ports; yields (HTTP URL, feed URL)."""
    port, feed_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXCHANGE_")}
    with log.open("wb") as output:
        process = ManagedProcess(
            "exchange-sim",
            python_module("devstack.exchange_sim", "--port", str(port), "--feed-port", str(feed_port)),
            env={**env, **knobs},
            cwd=str(REPO_ROOT),
            ready_url=f"http://{LOOPBACK}:{port}/health",
            stdout=output,
        )
        try:
            process.start()
            yield f"http://{LOOPBACK}:{port}", f"ws://{LOOPBACK}:{feed_port}/feed"
        finally:
            process.stop()


def test_real_simulator_feed_with_duplicates_and_reordering(
    stack: Stack, feed_id: str, log: Path, tmp_path: Path
) -> None:
    knobs = {
        "EXCHANGE_SEED": "7",
        "EXCHANGE_FAILURE_RATE": "0",
        "EXCHANGE_LATENCY_S": "0",
        "EXCHANGE_EXEC_DELAY_S": "0.02",
        "EXCHANGE_LIMIT_TTL_S": "0.3",
        "EXCHANGE_FEED_DUPLICATE_RATE": "0.3",
        "EXCHANGE_FEED_REORDER_RATE": "0.3",
    }
    with (
        exchange_simulator(tmp_path / "exchange.log", knobs) as (http_url, ws_url),
        bridge(stack, ws_url, feed_id, log) as process,
        requests.Session() as http,
    ):
        client_order_ids = [f"{feed_id}-{n}" for n in range(30)]
        for n, client_order_id in enumerate(client_order_ids):
            body = {
                "client_order_id": client_order_id,
                "instrument": "AAPL",
                "side": "buy" if n % 2 else "sell",
                "type": "market" if n % 3 else "limit",
                "quantity": 10 + n,
                "limit_price": None if n % 3 else 187.25,
            }
            response = http.post(f"{http_url}/orders", json=body, timeout=10)
            assert response.status_code == 201, response.text

        def all_done() -> bool:
            executions = [
                http.get(f"{http_url}/admin/orders/{c}", timeout=10).json()["execution"] for c in client_order_ids
            ]
            return all(execution is not None and execution["done"] for execution in executions)

        wait_until(all_done, "every order done at the exchange", process)
        last_seq = int(http.get(f"{http_url}/stats", timeout=10).json()["feed_seq"])
        wait_until(lambda: stack.checkpoint(feed_id) == last_seq, f"checkpoint {last_seq}", process)
        logged = http.get(f"{http_url}/executions?from_seq=1", timeout=10).json()["reports"]
        process.process.signal(signal.SIGTERM)
        assert process.exit_code() == 0

    assert [report["seq"] for report in logged] == list(range(1, last_seq + 1))
    on_stream = {json.loads(data)["seq"]: (key, json.loads(data)) for key, data in stack.records()}
    assert len(stack.records()) == last_seq  # the feed's duplicates were skipped
    for report in logged:
        assert on_stream[report["seq"]] == (report["client_order_id"], report)
    summary = process.output().rsplit("stopped cleanly:", 1)[1]
    assert "duplicates skipped 0," not in summary  # the knob did send repeats


def test_checkpoint_store_never_moves_backwards(stack: Stack, feed_id: str) -> None:
    from feed_bridge.checkpoint import DynamoDBCheckpointStore

    store = DynamoDBCheckpointStore(stack.table, feed_id, client=stack.dynamodb)
    assert store.load() == 0
    assert store.save(10) == 10
    assert store.save(5) == 10  # a late, lower write loses and says what is stored
    assert store.save(10) == 10
    assert store.save(11) == 11
    assert store.load() == stack.checkpoint(feed_id) == 11
