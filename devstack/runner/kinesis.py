"""The Kinesis event source mapping: one poller per shard (read in order, invoke, checkpoint, retry or discard).

The retry rules themselves are pure functions in devstack/runner/retries.py;
this module does the I/O around them: shard listing, iterators, GetRecords,
leases and the on-failure destination.
"""

from __future__ import annotations

import datetime
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalice.app import KinesisEventConfig

from devstack.runner.checkpoints import CheckpointStore, Lease
from devstack.runner.destination import FailureDestination
from devstack.runner.events import epoch_seconds, iso_ms, kinesis_event, kinesis_failure_record
from devstack.runner.invocation import Invocation, LocalFunction
from devstack.runner.options import RunnerOptions
from devstack.runner.retries import (
    Discard,
    Segment,
    StreamFailure,
    StreamPlan,
    expire_records,
    plan_stream_retry,
    retry_backoff_s,
    stream_failure,
)
from devstack.runner.settings import MappingSettings
from devstack.runner.verdicts import lambda_verdict
from devstack.runner.worker import AWS_ERRORS, RETRYABLE, Worker

# One logger for the whole runner, as before it was a package: log filters and lines stay the same.
log = logging.getLogger("devstack.runner")

KINESIS_GET_RECORDS_INTERVAL_S = 0.2  # Kinesis allows 5 GetRecords calls per second per shard


@dataclass(frozen=True)
class KinesisSource:
    """A KinesisEventConfig (what `chalice package` deploys) plus the settings Chalice cannot express."""

    name: str
    stream_name: str
    batch_size: int
    starting_position: str
    window_s: float
    settings: MappingSettings = field(default_factory=MappingSettings)

    @classmethod
    def from_config(cls, config: KinesisEventConfig, settings: MappingSettings | None = None) -> KinesisSource:
        return cls(
            config.name,
            config.stream,
            config.batch_size,
            config.starting_position,
            float(config.maximum_batching_window_in_seconds),
            settings or MappingSettings(),
        )


@dataclass(frozen=True)
class StreamInfo:
    name: str
    arn: str
    created: str  # the stream's creation time: a recreated stream of the same name is a different stream


@dataclass
class StreamBatchReport:
    """One invocation for a shard: the records, how Lambda read the outcome, and what it does next."""

    function: str
    shard_id: str
    sequence_numbers: list[str]
    invocation: Invocation
    failure: StreamFailure | None
    plan: StreamPlan


class KinesisShardPoller(Worker):
    """One shard of a Kinesis event source mapping: read in order, invoke, checkpoint, retry or discard.

    Keeps what Lambda keeps per shard: the checkpoint (durable, in the lease
    table), the shard iterator, and the records read but not yet done with (a
    batch being retried, or the halves of a bisected one). Those are always
    consecutive and directly follow the checkpoint, so moving the checkpoint
    to the end of whatever the head of the work finished is always right.
    """

    def __init__(
        self,
        source: KinesisSource,
        function: LocalFunction,
        stream: StreamInfo,
        shard_id: str,
        kinesis: Any,
        checkpoints: CheckpointStore,
        region: str,
        options: RunnerOptions,
        *,
        parents: Sequence[str] = (),
        from_trim_horizon: bool = False,
        destination: FailureDestination | None = None,
    ) -> None:
        super().__init__(f"kinesis:{source.name}:{shard_id}", source.name, options.error_backoff_s)
        self.source = source
        self.function = function
        self.stream = stream
        self.shard_id = shard_id
        self.kinesis = kinesis
        self.checkpoints = checkpoints
        self.region = region
        self.options = options
        self.from_trim_horizon = from_trim_horizon
        self.destination = destination
        self.policy = source.settings.retry_policy()
        self.lease_key = self.lease_key_for(shard_id)
        self.position: str | None = None  # the checkpoint, possibly not saved yet
        self.iterator: str | None = None
        self.shard_ended = False
        self.work: list[Segment] = []
        self.notices: list[dict[str, Any]] = []  # destination records not sent yet
        self._saved_position: str | None = None
        self._start_at: float | None = None
        self._lease_loaded = False
        self._pending_parents = set(parents)
        self._told_waiting = False
        self._last_get = -math.inf

    def lease_key_for(self, shard_id: str) -> str:
        return f"{self.function.spec.function_name}:{self.stream.arn}:{shard_id}"

    def poll_once(self) -> StreamBatchReport | None:
        if not self._lease_loaded:
            self._load_lease()
            if self.finished:
                return None
        if self._pending_parents and not self._parents_done():
            # Lambda finishes a parent shard before its children, so order per partition key survives resharding.
            if not self._told_waiting:
                log.info("%s: waiting for parent shards %s", self.name, ", ".join(sorted(self._pending_parents)))
                self._told_waiting = True
            self.stopping.wait(self.options.kinesis_idle_wait_s)
            return None
        self.flush()
        if not self.work:
            if self.shard_ended:
                self._end_shard()
                return None
            records = self.collect_batch()
            if not records:
                return None
            self.work.append(Segment(tuple(records)))
        report = self.process_head()
        self.flush()
        return report

    def _load_lease(self) -> None:
        self.checkpoints.ensure_table()
        lease = self.checkpoints.load(self.lease_key)
        if lease is not None and lease.stream_created != self.stream.created:
            log.warning("%s: ignoring the checkpoint of an earlier stream named %s", self.name, self.stream.name)
            lease = None
        if lease is not None:
            self.position = self._saved_position = lease.checkpoint
            self._start_at = lease.start_at
            self.finished = lease.shard_end
        elif self.source.starting_position == "LATEST" and not self.from_trim_horizon:
            # Lambda fixes LATEST once, when the mapping is created: saving the
            # moment means a restart does not skip what arrived while it was down.
            self._start_at = time.time()
            self.checkpoints.save(self._lease())
        self._lease_loaded = True
        if self.finished:
            log.info("%s: shard already read to its end", self.name)
        else:
            log.info("%s: reading from %s", self.name, self._start_description())

    def _start_description(self) -> str:
        if self.position is not None:
            return f"after checkpoint {self.position}"
        if self._start_at is not None:
            return f"LATEST (fixed at {iso_ms(self._start_at)})"
        return "TRIM_HORIZON"

    def _lease(self, shard_end: bool = False) -> Lease:
        return Lease(self.lease_key, self.position, self._start_at, shard_end, self.stream.created)

    def _parents_done(self) -> bool:
        for parent in sorted(self._pending_parents):
            lease = self.checkpoints.load(self.lease_key_for(parent))
            if lease is not None and lease.shard_end and lease.stream_created == self.stream.created:
                self._pending_parents.discard(parent)
        return not self._pending_parents

    def _acquire_iterator(self) -> str:
        kwargs: dict[str, Any] = {"StreamName": self.stream.name, "ShardId": self.shard_id}
        if self.position is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=self.position)
        elif self._start_at is not None:
            kwargs.update(
                ShardIteratorType="AT_TIMESTAMP",
                Timestamp=datetime.datetime.fromtimestamp(self._start_at, datetime.UTC),
            )
        else:
            kwargs.update(ShardIteratorType="TRIM_HORIZON")
        return str(self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"])

    def _get_records(self, limit: int) -> list[dict[str, Any]]:
        # At most 5 GetRecords a second per shard, Kinesis's limit, which Lambda respects too.
        pause = self._last_get + KINESIS_GET_RECORDS_INTERVAL_S - time.monotonic()
        if pause > 0 and self.stopping.wait(pause):
            return []
        if self.iterator is None:
            self.iterator = self._acquire_iterator()
        self._last_get = time.monotonic()
        try:
            response = self.kinesis.get_records(ShardIterator=self.iterator, Limit=limit)
        except AWS_ERRORS:
            # Expired or invalid (moto answers HTTP 500): next time a fresh one from the checkpoint,
            # which is where this one stood too, since nothing is read while work is pending.
            self.iterator = None
            raise
        self.iterator = response.get("NextShardIterator")
        if self.iterator is None:
            self.shard_ended = True  # a closed shard, read to its end
        return list(response.get("Records", []))

    def collect_batch(self) -> list[dict[str, Any]]:
        """One GetRecords of up to batch_size; with a batching window, more until batch_size or the window ends."""
        batch_size = self.source.batch_size
        records = self._get_records(batch_size)
        if not records:
            if not self.shard_ended:
                self.stopping.wait(self.options.kinesis_idle_wait_s)
            return []
        deadline = time.monotonic() + self.source.window_s
        while (
            len(records) < batch_size
            and not self.shard_ended
            and not self.stopping.is_set()
            and time.monotonic() < deadline
        ):
            try:
                records += self._get_records(batch_size - len(records))
            except AWS_ERRORS as exc:
                log.warning(
                    "%s: GetRecords failed inside the batching window, invoking with what is in hand: %s",
                    self.name,
                    exc,
                )
                break
        if self.stopping.is_set():
            # Read but never delivered, so not in flight: a restart reads them again from the checkpoint.
            self.iterator = None
            return []
        return records

    def process_head(self) -> StreamBatchReport | None:
        """Deliver the first segment of the work once, and apply Lambda's reading of the outcome."""
        segment: Segment | None = self.work[0]
        assert segment is not None
        segment, expired = expire_records(segment, time.time(), self.policy.maximum_record_age_s)
        if expired is not None:
            self._discard(expired)
            self._advance(str(expired.records[-1]["SequenceNumber"]))
            self.work[0:1] = [segment] if segment is not None else []
        if segment is None:
            return None
        pause = retry_backoff_s(segment.retries, self.options.retry_backoff_s, self.options.retry_backoff_max_s)
        if pause and self.stopping.wait(pause):
            return None
        sequence_numbers = segment.sequence_numbers
        event = kinesis_event(segment.records, self.shard_id, self.stream.arn, self.region, self.function.spec.role_arn)
        invocation = self.function.invoke(event)
        verdict = lambda_verdict(invocation, sequence_numbers, self.source.settings.report_batch_item_failures)
        failure = stream_failure(verdict, sequence_numbers, invocation.request_id)
        plan = plan_stream_retry(segment, failure, self.policy)
        self.work[0:1] = list(plan.next)
        if plan.discard is not None:
            self._discard(plan.discard)
        if plan.checkpoint is not None:
            self._advance(plan.checkpoint)
        log.info(
            "invoked %s shard=%s records=%d sequence=%s..%s %s duration_ms=%.0f request=%s",
            self.function.name,
            self.shard_id,
            len(sequence_numbers),
            sequence_numbers[0],
            sequence_numbers[-1],
            "ok" if failure is None else f"failed from {sequence_numbers[failure.first_failed]} ({failure.reason})",
            invocation.duration_ms,
            invocation.request_id,
        )
        return StreamBatchReport(self.function.name, self.shard_id, sequence_numbers, invocation, failure, plan)

    def _advance(self, sequence_number: str) -> None:
        # Numbers, not strings: "10" < "9" as text.
        if self.position is None or int(sequence_number) > int(self.position):
            self.position = sequence_number

    def _discard(self, discard: Discard) -> None:
        record = kinesis_failure_record(discard, self.shard_id, self.stream.arn, self.function.spec, time.time())
        info = record["KinesisBatchInfo"]
        count = info["batchSize"]
        where = f"{count} record{'s' * (count != 1)} {info['startSequenceNumber']}..{info['endSequenceNumber']}"
        if self.destination is None:
            log.error("%s: discarded %s (%s); no on-failure destination", self.name, where, discard.condition)
            return
        log.warning("%s: discarding %s (%s) to the on-failure destination", self.name, where, discard.condition)
        self.notices.append(record)

    def flush(self) -> None:
        """Send pending destination records, then save the checkpoint: never past records not yet reported."""
        while self.notices:
            assert self.destination is not None
            self.destination.send(self.notices[0])
            self.notices.pop(0)
        if self.position != self._saved_position:
            self.checkpoints.save(self._lease())
            self._saved_position = self.position

    def _end_shard(self) -> None:
        self.checkpoints.save(self._lease(shard_end=True))
        self.finished = True
        log.info("%s: shard closed and read to its end", self.name)

    def on_stop(self) -> None:
        # SIGTERM: the in-flight batch has finished; save its checkpoint, or a restart delivers it again.
        for attempt in range(3):
            try:
                self.flush()
                return
            except RETRYABLE as exc:
                log.warning("%s: saving progress on stop failed (attempt %d): %s", self.name, attempt + 1, exc)
                time.sleep(0.5)
        log.error(
            "%s: progress after %s not saved: those records will be delivered again", self.name, self._saved_position
        )


class KinesisStreamWorker(Worker):
    """A Kinesis event source mapping: lists the stream's shards now and then, and runs a poller per shard.

    Shards that appear later (resharding) are picked up at the next listing;
    a shard with listed parents waits until they are read to their end.
    """

    def __init__(
        self,
        source: KinesisSource,
        function: LocalFunction,
        region: str,
        options: RunnerOptions,
        new_client: Callable[[str], Any],
        checkpoints: CheckpointStore,
        destination: FailureDestination | None = None,
    ) -> None:
        super().__init__(f"kinesis:{source.name}", source.name, options.error_backoff_s)
        self.source = source
        self.function = function
        self.region = region
        self.options = options
        self.new_client = new_client
        self.kinesis = new_client("kinesis")
        self.checkpoints = checkpoints
        self.destination = destination
        self.stream: StreamInfo | None = None
        self.pollers: dict[str, KinesisShardPoller] = {}
        self._retired: list[KinesisShardPoller] = []
        self._lock = threading.Lock()
        self._listed = False

    def poll_once(self) -> list[str]:
        summary = self.kinesis.describe_stream_summary(StreamName=self.source.stream_name)["StreamDescriptionSummary"]
        created = summary.get("StreamCreationTimestamp")
        stream = StreamInfo(
            self.source.stream_name, str(summary["StreamARN"]), repr(epoch_seconds(created)) if created else ""
        )
        started: list[str] = []
        if summary.get("StreamStatus") in ("ACTIVE", "UPDATING"):
            if self.stream is not None and stream != self.stream:
                log.warning("%s: stream %s was recreated; starting over on its shards", self.name, stream.name)
                self._retire_pollers()
            self.stream = stream
            self.checkpoints.ensure_table()
            started = self._start_pollers(stream, self._list_shards())
        self.stopping.wait(self.options.shard_refresh_s)
        return started

    def _list_shards(self) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamName": self.source.stream_name}
        while True:
            page = self.kinesis.list_shards(**kwargs)
            shards += page.get("Shards", [])
            token = page.get("NextToken")
            if not token:
                return shards
            kwargs = {"NextToken": token}  # ListShards refuses the stream name alongside a token

    def _start_pollers(self, stream: StreamInfo, shards: Sequence[Mapping[str, Any]]) -> list[str]:
        listed = {str(shard["ShardId"]) for shard in shards}
        started: list[str] = []
        with self._lock:
            for shard in shards:
                shard_id = str(shard["ShardId"])
                if shard_id in self.pollers or self.stopping.is_set():
                    continue
                parents = [p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p in listed]
                poller = KinesisShardPoller(
                    self.source,
                    self.function,
                    stream,
                    shard_id,
                    self.new_client("kinesis"),
                    self.checkpoints,
                    self.region,
                    self.options,
                    parents=[str(p) for p in parents],
                    # A shard born after the mapping started holds only records newer than its LATEST.
                    from_trim_horizon=self._listed or bool(parents),
                    destination=self.destination,
                )
                self.pollers[shard_id] = poller
                poller.start()
                started.append(shard_id)
        self._listed = True
        if started:
            log.info("%s: polling %s shards %s", self.name, stream.arn, ", ".join(started))
        return started

    def _retire_pollers(self) -> None:
        with self._lock:
            for poller in self.pollers.values():
                poller.request_stop()
            self._retired += self.pollers.values()
            self.pollers = {}
            self._listed = False

    def _children(self) -> list[KinesisShardPoller]:
        with self._lock:
            return [*self.pollers.values(), *self._retired]

    def request_stop(self) -> None:
        super().request_stop()  # first, so that no poller starts after the list below is taken
        for poller in self._children():
            poller.request_stop()

    def join(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        done = super().join(timeout_s)
        for poller in self._children():
            done = poller.join(deadline - time.monotonic()) and done
        return done
