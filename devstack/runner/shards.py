"""Stream event source mappings (Kinesis, DynamoDB Streams): one poller per shard, and a worker that finds the shards.

Lambda reads both kinds of stream the same way: per shard, in order, from a
checkpoint; a batch of up to batch_size (gathered for up to the batching
window); partial batch responses, bisection, retries, a maximum record age and
an on-failure destination. Only the calls differ, so each service is a
`ShardReader` (devstack/runner/kinesis.py, devstack/runner/dynamodb_streams.py)
and everything else is here. The retry rules themselves are pure functions in
devstack/runner/retries.py.

Records travel through this module in one shape whatever the service:
a mapping with "SequenceNumber" and "ApproximateArrivalTimestamp" (what
Kinesis's GetRecords returns; a DynamoDB reader wraps its records so).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self

from devstack.runner.checkpoints import CheckpointStore, Lease
from devstack.runner.destination import FailureDestination
from devstack.runner.events import epoch_seconds, iso_ms, stream_failure_record
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

GET_RECORDS_INTERVAL_S = 0.2  # Kinesis allows 5 GetRecords calls per second per shard; Lambda polls DynamoDB 4 times


@dataclass(frozen=True)
class StreamSource:
    """A stream event source of the app (what `chalice package` deploys) plus the settings Chalice cannot express."""

    name: str
    stream: str  # what the service's calls name the stream by: a Kinesis stream name, a DynamoDB stream ARN
    batch_size: int
    starting_position: str
    window_s: float
    settings: MappingSettings = field(default_factory=MappingSettings)

    @classmethod
    def of(cls, config: Any, stream: str, settings: MappingSettings | None = None) -> Self:
        """From a Chalice KinesisEventConfig or DynamoDBEventConfig, whose stream is named by `stream`."""
        window_s = float(config.maximum_batching_window_in_seconds)
        settings = settings or MappingSettings()
        return cls(config.name, stream, config.batch_size, config.starting_position, window_s, settings)


@dataclass(frozen=True)
class StreamInfo:
    name: str
    arn: str
    created: str  # the stream's creation time: a recreated stream of the same name is a different stream


@dataclass(frozen=True)
class ShardListing:
    """A stream that can be read now, and its shards (id -> parent shard ids)."""

    stream: StreamInfo
    shards: Mapping[str, Sequence[str]]


class ShardReader(Protocol):
    """The calls of one streaming service, for one shard poller; records come back in this module's shape."""

    service: str  # the boto3 client's service name
    kind: str  # what names and log lines call the mapping: kinesis, dynamodb
    batch_info_key: str  # where an on-failure record holds the batch: KinesisBatchInfo, DDBStreamBatchInfo

    def list_shards(self, client: Any, stream: str) -> ShardListing | None: ...

    def shard_iterator(
        self, client: Any, stream: StreamInfo, shard_id: str, after: str | None, start_at: float | None
    ) -> str: ...

    def read(self, client: Any, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None]: ...

    def event(
        self, records: Sequence[Mapping[str, Any]], shard_id: str, stream_arn: str, region: str, identity_arn: str
    ) -> dict[str, Any]: ...


@dataclass
class StreamBatchReport:
    """One invocation for a shard: the records, how Lambda read the outcome, and what it does next."""

    function: str
    shard_id: str
    sequence_numbers: list[str]
    invocation: Invocation
    failure: StreamFailure | None
    plan: StreamPlan


class ShardPoller(Worker):
    """One shard of a stream event source mapping: read in order, invoke, checkpoint, retry or discard.

    Keeps what Lambda keeps per shard: the checkpoint (durable, in the lease
    table), the shard iterator, and the records read but not yet done with (a
    batch being retried, or the halves of a bisected one). Those are always
    consecutive and directly follow the checkpoint, so moving the checkpoint
    to the end of whatever the head of the work finished is always right.
    """

    reader: ClassVar[ShardReader]

    def __init__(
        self,
        source: StreamSource,
        function: LocalFunction,
        stream: StreamInfo,
        shard_id: str,
        client: Any,
        checkpoints: CheckpointStore,
        region: str,
        options: RunnerOptions,
        *,
        parents: Sequence[str] = (),
        from_trim_horizon: bool = False,
        destination: FailureDestination | None = None,
    ) -> None:
        super().__init__(f"{self.reader.kind}:{source.name}:{shard_id}", source.name, options.error_backoff_s)
        self.source = source
        self.function = function
        self.stream = stream
        self.shard_id = shard_id
        self.client = client
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

    def _get_records(self, limit: int) -> list[dict[str, Any]]:
        # At most 5 GetRecords a second per shard, Kinesis's limit, which Lambda respects too.
        pause = self._last_get + GET_RECORDS_INTERVAL_S - time.monotonic()
        if pause > 0 and self.stopping.wait(pause):
            return []
        if self.iterator is None:
            start_at = self._start_at if self.position is None else None
            self.iterator = self.reader.shard_iterator(self.client, self.stream, self.shard_id, self.position, start_at)
        self._last_get = time.monotonic()
        try:
            records, self.iterator = self.reader.read(self.client, self.iterator, limit)
        except AWS_ERRORS:
            # Expired or invalid (moto answers HTTP 500): next time a fresh one from the checkpoint,
            # which is where this one stood too, since nothing is read while work is pending.
            self.iterator = None
            raise
        if self.iterator is None:
            self.shard_ended = True  # a closed shard, read to its end
        return self._since_start(records)

    def _since_start(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Without a checkpoint yet under LATEST: the records older than the moment it was fixed are passed over.

        Kinesis's AT_TIMESTAMP iterator starts there already; DynamoDB Streams has
        no such iterator, so its reader starts at TRIM_HORIZON and this skips.
        """
        if self.position is not None or self._start_at is None:
            return records
        # DynamoDB Streams stamps records to the whole second (LocalStack too): a record of the start's
        # own second may be before or after it, and is kept (LATEST is approximate on AWS as well).
        start_second = int(self._start_at)
        older = 0
        while older < len(records) and epoch_seconds(records[older]["ApproximateArrivalTimestamp"]) < start_second:
            older += 1
        if older:
            self._advance(str(records[older - 1]["SequenceNumber"]))
        return records[older:]

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
        event = self.reader.event(
            segment.records, self.shard_id, self.stream.arn, self.region, self.function.spec.role_arn
        )
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
        record = stream_failure_record(
            discard, self.shard_id, self.stream.arn, self.function.spec, time.time(), self.reader.batch_info_key
        )
        info = record[self.reader.batch_info_key]
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


class StreamMappingWorker(Worker):
    """A stream event source mapping: lists the stream's shards now and then, and runs a poller per shard.

    Shards that appear later (resharding) are picked up at the next listing;
    a shard with listed parents waits until they are read to their end.
    """

    poller_class: ClassVar[type[ShardPoller]]

    def __init__(
        self,
        source: StreamSource,
        function: LocalFunction,
        region: str,
        options: RunnerOptions,
        new_client: Callable[[str], Any],
        checkpoints: CheckpointStore,
        destination: FailureDestination | None = None,
    ) -> None:
        reader = self.poller_class.reader
        super().__init__(f"{reader.kind}:{source.name}", source.name, options.error_backoff_s)
        self.reader = reader
        self.source = source
        self.function = function
        self.region = region
        self.options = options
        self.new_client = new_client
        self.client = new_client(reader.service)
        self.checkpoints = checkpoints
        self.destination = destination
        self.stream: StreamInfo | None = None
        self.pollers: dict[str, ShardPoller] = {}
        self._retired: list[ShardPoller] = []
        self._lock = threading.Lock()
        self._listed = False

    def poll_once(self) -> list[str]:
        listing = self.reader.list_shards(self.client, self.source.stream)
        started: list[str] = []
        if listing is not None:
            if self.stream is not None and listing.stream != self.stream:
                log.warning("%s: stream %s was recreated; starting over on its shards", self.name, listing.stream.name)
                self._retire_pollers()
            self.stream = listing.stream
            self.checkpoints.ensure_table()
            started = self._start_pollers(listing)
        self.stopping.wait(self.options.shard_refresh_s)
        return started

    def _start_pollers(self, listing: ShardListing) -> list[str]:
        started: list[str] = []
        with self._lock:
            for shard_id, parents in listing.shards.items():
                if shard_id in self.pollers or self.stopping.is_set():
                    continue
                listed_parents = [parent for parent in parents if parent in listing.shards]
                poller = self.poller_class(
                    self.source,
                    self.function,
                    listing.stream,
                    shard_id,
                    self.new_client(self.reader.service),
                    self.checkpoints,
                    self.region,
                    self.options,
                    parents=listed_parents,
                    # A shard born after the mapping started holds only records newer than its LATEST.
                    from_trim_horizon=self._listed or bool(listed_parents),
                    destination=self.destination,
                )
                self.pollers[shard_id] = poller
                poller.start()
                started.append(shard_id)
        self._listed = True
        if started:
            log.info("%s: polling %s shards %s", self.name, listing.stream.arn, ", ".join(started))
        return started

    def _retire_pollers(self) -> None:
        with self._lock:
            for poller in self.pollers.values():
                poller.request_stop()
            self._retired += self.pollers.values()
            self.pollers = {}
            self._listed = False

    def _children(self) -> list[ShardPoller]:
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
