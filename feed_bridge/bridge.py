"""The bridge itself: read the feed, buffer, put batches on Kinesis, checkpoint, reconnect, shut down cleanly."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol, TextIO, TypeVar

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

from feed_bridge.aws import CredentialUnavailable, SecretCredential, client_factory
from feed_bridge.batching import RecordBuffer
from feed_bridge.checkpoint import CheckpointStore, CheckpointUnavailable, DynamoDBCheckpointStore
from feed_bridge.kinesis_sink import KinesisSink, StreamNotFound
from feed_bridge.records import FALLBACK_PARTITION_KEY, MAX_RECORD_BYTES, InvalidReport, Record, feed_url, parse_report
from feed_bridge.retry import Backoff, RecordSink, SinkError, put_until_stored
from feed_bridge.settings import BridgeSettings, ConfigurationError
from feed_bridge.tracker import SeqTracker

log = logging.getLogger("feed_bridge")

READY_LINE = "feed bridge ready"
# A report too big for Kinesis is still read whole (and then skipped with an
# error) rather than making the WebSocket fail on it and reconnect forever.
MAX_MESSAGE_BYTES = 2 * MAX_RECORD_BYTES
# Closing the WebSocket on shutdown must not eat into the flush grace.
CLOSE_TIMEOUT_S = 1.0
# Time the final checkpoint write gets even when the grace is used up.
FINAL_CHECKPOINT_MIN_S = 1.0
# At most this much of an invalid message goes into the log.
LOG_SNIPPET_CHARS = 200

T = TypeVar("T")


class VenueCredential(Protocol):
    """What the feed's handshake proves us with (feed_bridge.aws.SecretCredential); blocking calls."""

    def current(self) -> str: ...

    def refreshed(self, refused: str) -> str: ...


@dataclass
class Stats:
    """Counters since start, for the periodic INFO line and the final summary."""

    received: int = 0
    duplicates: int = 0
    invalid: int = 0
    put: int = 0
    flushes: int = 0
    put_retries: int = 0
    connects: int = 0
    last_seq: int = 0


class FeedBridge:
    """Feed -> buffer -> Kinesis, with the checkpoint in DynamoDB; run() until stop is set.

    Four tasks share one event loop: the reader (WebSocket, reconnects), the
    flusher (batches to the sink, retries), the checkpointer (writes the
    checkpoint after flushes, coalescing) and the stats logger. Blocking AWS
    calls run in a thread pool of their own so that reading never waits for
    Kinesis or DynamoDB, and so that shutdown need not wait for a hung call.
    """

    def __init__(
        self,
        settings: BridgeSettings,
        sink: RecordSink,
        checkpoints: CheckpointStore,
        *,
        stdout: TextIO | None = None,
        check_sink: Callable[[], None] | None = None,
        credential: VenueCredential | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.checkpoints = checkpoints
        self.stats = Stats()
        self._stdout = stdout or sys.stdout
        self._check_sink = check_sink
        # Sent as `Authorization: Bearer ...` on every handshake; None: a feed that asks for none.
        self._credential = credential
        self._refused_credential: str | None = None  # what the venue refused last (read again before retrying)
        self._sent_credential: str | None = None
        self._feed_url = str(settings.exchange_feed_url)
        self._buffer = RecordBuffer(settings.feed_batch_size, settings.feed_linger_s, settings.feed_max_buffered)
        self._tracker = SeqTracker()
        self._stored_checkpoint = 0
        self._checkpoint_due = asyncio.Event()
        self._closing = False
        self._ready = False
        self._reconnect_backoff = Backoff(settings.feed_reconnect_min_s, settings.feed_reconnect_max_s)
        self._put_backoff = Backoff(settings.feed_put_retry_min_s, settings.feed_put_retry_max_s)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="feed-bridge-aws")

    @property
    def checkpoint(self) -> int:
        """The highest seq such that it and every seq below it is on Kinesis (in memory; may be ahead of the table)."""
        return self._tracker.checkpoint

    @property
    def stored_checkpoint(self) -> int:
        """The checkpoint as last written to (or read from) the table."""
        return self._stored_checkpoint

    async def run(self, stop: asyncio.Event, force: asyncio.Event | None = None) -> bool:
        """Bridge until stop is set, then flush within the grace; True if everything read was put and checkpointed.

        force set during the shutdown abandons the flush at once (a second
        Ctrl-C). Raises ConfigurationError if the stream or the table is missing.
        """
        force = force or asyncio.Event()
        try:
            started = await self._start(stop)
            if not started:
                return True  # stopped before anything was read: nothing to flush
            return await self._bridge(stop, force)
        finally:
            # Never wait for a hung AWS call here: the caller exits the process.
            self._executor.shutdown(wait=False, cancel_futures=True)

    # --- start-up ----------------------------------------------------------------

    async def _start(self, stop: asyncio.Event) -> bool:
        """Check the stream, load the checkpoint; retries while AWS is unreachable. False if stopped meanwhile."""
        attempt = 0
        while not stop.is_set():
            try:
                if self._check_sink is not None:
                    await self._blocking(self._check_sink)
                checkpoint = await self._blocking(self.checkpoints.load)
            except StreamNotFound as exc:
                raise ConfigurationError(str(exc)) from exc
            except (SinkError, CheckpointUnavailable) as exc:
                if isinstance(exc, CheckpointUnavailable) and exc.code == "ResourceNotFoundException":
                    raise ConfigurationError(
                        f"DynamoDB table {self.settings.feed_checkpoints_table_name} does not exist"
                    ) from exc
                delay = self._reconnect_backoff.delay(attempt)
                attempt += 1
                log.warning("start: AWS not reachable (%s), retrying in %.2fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            self._tracker = SeqTracker(checkpoint)
            self._stored_checkpoint = checkpoint
            log.info(
                "start: feed %s checkpoint %d, resuming from seq %d", self.settings.feed_id, checkpoint, checkpoint + 1
            )
            return True
        return False

    # --- running -------------------------------------------------------------------

    async def _bridge(self, stop: asyncio.Event, force: asyncio.Event) -> bool:
        reader = asyncio.create_task(self._read_feed(), name="reader")
        flusher = asyncio.create_task(self._flush_batches(), name="flusher")
        checkpointer = asyncio.create_task(self._write_checkpoints(), name="checkpointer")
        stats = asyncio.create_task(self._log_stats(), name="stats")
        stopped = asyncio.create_task(stop.wait(), name="stop")
        tasks = {reader, flusher, checkpointer, stats}
        try:
            done, _ = await asyncio.wait({*tasks, stopped}, return_when=asyncio.FIRST_COMPLETED)
            crashed = [task for task in done if task is not stopped]
            for task in crashed:
                # None of the loops ends by itself: an end is a bug; flush what
                # can be flushed and report failure so the service restarts us.
                log.critical("task %s ended unexpectedly", task.get_name(), exc_info=task.exception())
            log.info("stopping: no more reads; flushing %d buffered reports", len(self._buffer))
            clean = await self._shut_down(reader, flusher, checkpointer, force)
            return clean and not crashed
        finally:
            for task in (*tasks, stopped):
                task.cancel()
            await asyncio.gather(*tasks, stopped, return_exceptions=True)

    async def _shut_down(
        self,
        reader: asyncio.Task[None],
        flusher: asyncio.Task[None],
        checkpointer: asyncio.Task[None],
        force: asyncio.Event,
    ) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.feed_shutdown_grace_s
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        # From here the buffer hands out what it holds without lingering and
        # the flusher ends once it is empty.
        await self._buffer.close()
        forced = asyncio.create_task(force.wait())
        try:
            await self._finish(flusher, forced, deadline - loop.time())
            # Then the checkpointer stores the final mark and ends. Even with
            # the grace used up it gets a moment: storing what did get onto
            # Kinesis saves replaying it after the restart.
            self._closing = True
            self._checkpoint_due.set()
            await self._finish(checkpointer, forced, max(deadline - loop.time(), FINAL_CHECKPOINT_MIN_S))
        finally:
            forced.cancel()
        unflushed = self._tracker.in_flight  # buffered, or taken for a put that did not finish
        clean = unflushed == 0 and self._stored_checkpoint >= self._tracker.checkpoint
        summary = (
            f"received {self.stats.received}, put {self.stats.put}, duplicates skipped {self.stats.duplicates}, "
            f"invalid {self.stats.invalid}, checkpoint {self._stored_checkpoint}"
        )
        if clean:
            log.info("stopped cleanly: %s", summary)
        else:
            log.error(
                "stopped with %d reports not on Kinesis and checkpoint %d stored of %d (%s); "
                "the next start resumes from seq %d",
                unflushed,
                self._stored_checkpoint,
                self._tracker.checkpoint,
                "forced" if force.is_set() else f"grace of {self.settings.feed_shutdown_grace_s:g}s over",
                self._stored_checkpoint + 1,
            )
            log.info("summary: %s", summary)
        return clean

    @staticmethod
    async def _finish(task: asyncio.Task[None], forced: asyncio.Task[bool], timeout_s: float) -> None:
        """Wait for task to end by itself within timeout_s (or until forced), else cancel it."""
        if not task.done() and not forced.done():
            await asyncio.wait({task, forced}, timeout=max(0.0, timeout_s), return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _read_feed(self) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            # Resume right after what is surely on Kinesis; seqs already in the
            # buffer that the exchange resends are recognised as duplicates.
            url = feed_url(self._feed_url, self._tracker.checkpoint + 1)
            connected_at: float | None = None
            try:
                async with connect(
                    url,
                    additional_headers=await self._handshake_headers(),
                    open_timeout=self.settings.feed_open_timeout_s,
                    close_timeout=CLOSE_TIMEOUT_S,
                    max_size=MAX_MESSAGE_BYTES,
                ) as websocket:
                    connected_at = loop.time()
                    self._refused_credential = None
                    self.stats.connects += 1
                    log.info("connected to %s", url)
                    if not self._ready:
                        self._ready = True
                        print(READY_LINE, file=self._stdout, flush=True)
                    async for message in websocket:
                        attempt = 0  # a delivered report proves the connection works
                        await self._on_message(message)
                log.warning(
                    "feed closed by the exchange (code %s %s)", websocket.close_code, websocket.close_reason or ""
                )
            except InvalidStatus as exc:
                if self._refused(exc):
                    continue  # at once, with the credential read again
            except CredentialUnavailable as exc:
                log.error("feed not connected: the venue credential is unavailable: %s", exc)
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.warning("feed connection %s: %s: %s", url, type(exc).__name__, exc)
            if connected_at is not None and loop.time() - connected_at >= self.settings.feed_reconnect_max_s:
                attempt = 0  # it stayed up a while: start over at the short delays
            delay = self._reconnect_backoff.delay(attempt)
            attempt += 1
            # The from_seq is decided when the delay is over: flushes finishing
            # meanwhile move it on, and the "connected to" line shows it.
            log.info("reconnecting in %.2fs", delay)
            await asyncio.sleep(delay)

    async def _handshake_headers(self) -> dict[str, str]:
        """The credential for the next handshake: read again if the venue refused the last one."""
        if self._credential is None:
            return {}
        credential, refused = self._credential, self._refused_credential
        if refused is None:
            value = await self._blocking(credential.current)
        else:
            value = await self._blocking(functools.partial(credential.refreshed, refused))
        self._sent_credential = value
        return {"Authorization": f"Bearer {value}"}

    def _refused(self, exc: InvalidStatus) -> bool:
        """Log a refused handshake; True if it refused our credential for the first time (retry at once)."""
        status = exc.response.status_code
        if status != HTTPStatus.UNAUTHORIZED or self._credential is None:
            log.warning("feed handshake refused: HTTP %s", status)
            return False
        first = self._refused_credential is None
        self._refused_credential = self._sent_credential
        if first:
            log.warning("feed handshake refused our credential (HTTP 401): reading it again (rotated?)")
        else:
            log.error(
                "feed handshake refused our credential (HTTP 401) also after reading it again: "
                "check the venue credential secret; retrying with backoff"
            )
        return first

    async def _on_message(self, message: str | bytes) -> None:
        try:
            record = parse_report(message)
        except InvalidReport as exc:
            self.stats.invalid += 1
            snippet = message[:LOG_SNIPPET_CHARS]
            if exc.seq is not None and self._tracker.accept(exc.seq):
                # Known seq but impossible to put: counted as handled, or the
                # checkpoint would stop here for good and every restart would
                # replay everything since.
                self._tracker.mark_put([exc.seq])
            log.error("skipping invalid feed message: %s: %r", exc, snippet)
            return
        self.stats.received += 1
        self.stats.last_seq = record.seq
        if not self._tracker.accept(record.seq):
            self.stats.duplicates += 1
            return
        if record.partition_key == FALLBACK_PARTITION_KEY:
            log.warning("seq %d has no usable client_order_id; put under key %s", record.seq, FALLBACK_PARTITION_KEY)
        try:
            # Waits while the buffer is full: Kinesis is behind, so stop reading.
            await self._buffer.put(record)
        except BaseException:
            # Cancelled (shutdown) before it was buffered: not ours to put any
            # more; the next start reads it again from the checkpoint.
            self._tracker.release(record.seq)
            raise

    async def _flush_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._buffer.next_batch()
            if not batch:
                return  # closed and drained: shutting down
            started = loop.time()
            outcome = await put_until_stored(
                self.sink, batch, self._put_backoff, on_stored=self._on_stored, run_blocking=self._blocking
            )
            self.stats.flushes += 1
            self.stats.put_retries += outcome.retried_records
            log.debug(
                "flushed %d records (seq %d..%d) in %.0f ms, %d attempt(s); checkpoint %d",
                len(batch),
                min(record.seq for record in batch),
                max(record.seq for record in batch),
                (loop.time() - started) * 1000,
                outcome.attempts,
                self._tracker.checkpoint,
            )
            # Only after the whole batch is in: the checkpointer writes
            # whatever the contiguous mark is by the time it gets to run.
            if self._tracker.checkpoint > self._stored_checkpoint:
                self._checkpoint_due.set()

    def _on_stored(self, records: Sequence[Record]) -> None:
        self.stats.put += len(records)
        self._tracker.mark_put(record.seq for record in records)

    async def _write_checkpoints(self) -> None:
        attempt = 0
        while True:
            await self._checkpoint_due.wait()
            self._checkpoint_due.clear()
            target = self._tracker.checkpoint
            if target > self._stored_checkpoint:
                try:
                    stored = await self._blocking(functools.partial(self.checkpoints.save, target))
                except CheckpointUnavailable as exc:
                    # Not fatal: Kinesis already has the reports; a stale
                    # checkpoint only means more duplicates after a restart.
                    delay = self._put_backoff.delay(attempt)
                    attempt += 1
                    log.warning("checkpoint %d not stored (%s), retrying in %.2fs", target, exc, delay)
                    self._checkpoint_due.set()
                    await asyncio.sleep(delay)
                    continue
                attempt = 0
                if stored > target:
                    log.warning(
                        "checkpoint table holds seq %d for feed %s, ahead of ours (%d): another bridge on this feed?",
                        stored,
                        self.settings.feed_id,
                        target,
                    )
                self._stored_checkpoint = max(self._stored_checkpoint, target)
            if self._closing and self._stored_checkpoint >= self._tracker.checkpoint:
                return

    async def _log_stats(self) -> None:
        interval = self.settings.feed_stats_interval_s
        last_received, last_time = 0, time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            rate = (self.stats.received - last_received) / max(now - last_time, 1e-9)
            last_received, last_time = self.stats.received, now
            log.info(
                "stats: %.1f reports/s, received %d, last seq %d, put %d, checkpoint %d (stored %d), buffered %d, "
                "duplicates %d, invalid %d, put retries %d, connects %d%s",
                rate,
                self.stats.received,
                self.stats.last_seq,
                self.stats.put,
                self._tracker.checkpoint,
                self._stored_checkpoint,
                len(self._buffer),
                self.stats.duplicates,
                self.stats.invalid,
                self.stats.put_retries,
                self.stats.connects,
                # A hole that does not fill keeps the checkpoint (and the
                # replay on restart) where it is: worth seeing.
                f", {self._tracker.put_above_checkpoint} put above a gap" if self._tracker.put_above_checkpoint else "",
            )

    async def _blocking(self, function: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)


def build_bridge(
    settings: BridgeSettings,
    *,
    kinesis_client: Any = None,
    dynamodb_client: Any = None,
    secretsmanager_client: Any = None,
    stdout: TextIO | None = None,
) -> FeedBridge:
    """The production bridge: Kinesis sink, DynamoDB checkpoints, the venue credential from Secrets Manager;
    clients injected or made on first use."""
    sink = KinesisSink(
        settings.executions_stream_name,
        client=kinesis_client,
        client_factory=client_factory("kinesis", settings.aws_connect_timeout_s, settings.aws_read_timeout_s),
    )
    checkpoints = DynamoDBCheckpointStore(
        settings.feed_checkpoints_table_name,
        settings.feed_id,
        client=dynamodb_client,
        client_factory=client_factory("dynamodb", settings.aws_connect_timeout_s, settings.aws_read_timeout_s),
    )
    credential = SecretCredential(
        settings.exchange_credential_secret_name,
        client=secretsmanager_client,
        client_factory=client_factory("secretsmanager", settings.aws_connect_timeout_s, settings.aws_read_timeout_s),
    )
    return FeedBridge(settings, sink, checkpoints, stdout=stdout, check_sink=sink.check, credential=credential)
