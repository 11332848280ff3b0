"""The Runner: one worker per event source of a Chalice app (SQS, Kinesis, DynamoDB Streams, schedule), run together."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config
from chalice.app import (
    BaseEventSourceConfig,
    Chalice,
    DynamoDBEventConfig,
    KinesisEventConfig,
    ScheduledEventConfig,
    SQSEventConfig,
)

from devstack.lambda_context import DEFAULT_ACCOUNT, DEFAULT_REGION, FunctionSpec
from devstack.runner.checkpoints import CheckpointStore
from devstack.runner.destination import FailureDestination
from devstack.runner.dynamodb_streams import DynamoDBStreamSource, DynamoDBStreamWorker
from devstack.runner.invocation import Invocation, LocalFunction
from devstack.runner.kinesis import KinesisSource, KinesisStreamWorker
from devstack.runner.options import RunnerOptions
from devstack.runner.scaling import ScalingPolicy, ScalingSqsMapping, maximum_concurrency
from devstack.runner.schedule import ScheduleFirer, schedule_period_s
from devstack.runner.settings import EventSourcesError, MappingSettings
from devstack.runner.shards import StreamMappingWorker, StreamSource
from devstack.runner.sqs import BatchReport, SqsPoller, SqsSource
from devstack.runner.worker import Worker

# One logger for the whole runner, as before it was a package: log filters and lines stay the same.
log = logging.getLogger("devstack.runner")

DEFAULT_POOL_CONNECTIONS = 10  # botocore's own default
SPARE_POOL_CONNECTIONS = 4  # beyond one per SQS poller: the odd call made while every poller long-polls


class Runner:
    """Runs a Chalice app's SQS, Kinesis, DynamoDB stream and schedule handlers the way Lambda's event sources would."""

    def __init__(
        self,
        app: Chalice,
        options: RunnerOptions | None = None,
        sqs_client: Any = None,
        region: str | None = None,
        event_sources: Mapping[str, MappingSettings] | None = None,
        clients: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.options = options or RunnerOptions()
        # Injected clients (tests use fakes) are shared; otherwise each worker gets its own.
        self._clients = dict(clients or {})
        if sqs_client is not None:
            self._clients["sqs"] = sqs_client
        self.region = region or _region_of(next(iter(self._clients.values()), None))
        self.event_sources = dict(event_sources or {})
        self._workers: list[Worker] | None = None
        self._checkpoints: CheckpointStore | None = None

    def _client(self, service: str, max_pool_connections: int = DEFAULT_POOL_CONNECTIONS) -> Any:
        injected = self._clients.get(service)
        if injected is not None:
            return injected
        # A client per worker, created here on the calling thread: boto3's
        # default session is not thread-safe, its clients are.
        return boto3.session.Session().client(
            service,
            region_name=self.region,
            config=Config(
                connect_timeout=2,
                read_timeout=self.options.poll_wait_s + 10,
                retries={"max_attempts": 2, "mode": "standard"},
                max_pool_connections=max_pool_connections,
            ),
        )

    @property
    def checkpoints(self) -> CheckpointStore:
        if self._checkpoints is None:
            self._checkpoints = CheckpointStore(self._client("dynamodb"), self.options.checkpoint_table)
        return self._checkpoints

    def function(self, name: str) -> LocalFunction:
        spec = FunctionSpec(
            function_name=f"{self.app.app_name}-{self.options.stage}-{name}",
            timeout_s=self.options.function_timeout_s,
            region=self.region,
            role_name=f"{self.app.app_name}-{self.options.stage}",  # Chalice's default shared role
        )
        return LocalFunction(name, self.app.handler_map[name], spec)

    def _workers_for(self, source: BaseEventSourceConfig) -> list[Worker]:
        opts = self.options
        settings = self.event_sources.get(source.name)
        if isinstance(source, SQSEventConfig):
            if settings is not None and settings.stream_only_settings:
                raise EventSourcesError(
                    f"{source.name}: {', '.join(settings.stream_only_settings)} apply to stream sources only; "
                    "Lambda refuses them on an SQS event source mapping"
                )
            return [self._sqs_mapping(SqsSource.from_config(source, settings))]
        if isinstance(source, KinesisEventConfig):
            return [self._stream_mapping(KinesisStreamWorker, KinesisSource.from_config(source, settings))]
        if isinstance(source, DynamoDBEventConfig):
            return [self._stream_mapping(DynamoDBStreamWorker, DynamoDBStreamSource.from_config(source, settings))]
        if isinstance(source, ScheduledEventConfig):
            rule_name = f"{self.app.app_name}-{opts.stage}-{source.name}-event"
            rule_arn = f"arn:aws:events:{self.region}:{DEFAULT_ACCOUNT}:rule/{rule_name}"
            period = (
                opts.schedule_intervals.get(source.name)
                or opts.schedule_interval_s
                or schedule_period_s(source.schedule_expression)
            )
            return [ScheduleFirer(self.function(source.name), rule_arn, self.region, period)]
        log.info("event source %s (%s) is not run locally", source.name, type(source).__name__)
        return []

    def _stream_mapping(self, worker_class: type[StreamMappingWorker], source: StreamSource) -> StreamMappingWorker:
        destination = None
        if source.settings.on_failure_destination_output:
            destination = FailureDestination(
                source.settings.on_failure_destination_output,
                self.options.stack_name,
                self._client("cloudformation"),
                self._client("sqs"),
            )
        function = self.function(source.name)
        return worker_class(source, function, self.region, self.options, self._client, self.checkpoints, destination)

    def _sqs_mapping(self, source: SqsSource) -> ScalingSqsMapping:
        function = self.function(source.name)
        policy = ScalingPolicy(maximum_concurrency(source, self.options.max_sqs_concurrency))
        # One client for all the mapping's pollers, built now: adding a poller happens under the pool's
        # lock while a full batch waits, and a client costs ~100 ms to build. A connection per poller
        # (each holds one through its long poll) and a few spare, so none waits for the pool.
        sqs_client = self._client("sqs", max_pool_connections=policy.maximum + SPARE_POOL_CONNECTIONS)

        def new_poller(index: int) -> SqsPoller:
            return SqsPoller(
                source,
                function,
                sqs_client,
                self.region,
                name=f"sqs:{source.name}#{index}",
                poll_wait_s=self.options.poll_wait_s,
                error_backoff_s=self.options.error_backoff_s,
            )

        return ScalingSqsMapping(source, policy, new_poller)

    @property
    def workers(self) -> list[Worker]:
        """The workers of every event source; raises EventSourcesError for settings Lambda would refuse."""
        if self._workers is None:
            handlers = {source.name for source in self.app.event_sources}
            for name in sorted(set(self.event_sources) - handlers):
                log.warning("event source settings for %s, which is no event handler of this app", name)
            self._workers = [w for source in self.app.event_sources for w in self._workers_for(source)]
        return self._workers

    def worker(self, source_name: str) -> Worker:
        """The (first) worker of the named event source, for one-shot use in tests."""
        for candidate in self.workers:
            if candidate.source_name == source_name:
                return candidate
        raise KeyError(source_name)

    def run_once_sqs(self, source_name: str) -> BatchReport | None:
        """One receive-invoke-delete cycle of an SQS source, on the calling thread."""
        mapping = self.worker(source_name)
        assert isinstance(mapping, ScalingSqsMapping), f"{source_name} is not an SQS source"
        return mapping.poll_once()

    def fire_schedule(self, source_name: str) -> Invocation:
        """Invoke a schedule handler once, now, on the calling thread."""
        firer = self.worker(source_name)
        assert isinstance(firer, ScheduleFirer), f"{source_name} is not a schedule"
        return firer.fire()

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        log.info("runner started %d workers: %s", len(self.workers), ", ".join(w.name for w in self.workers))

    def stop(self, grace_s: float = 8.0) -> bool:
        """Stop receiving, wait up to grace_s for in-flight invocations; True if all finished."""
        for worker in self.workers:
            worker.request_stop()
        deadline = time.monotonic() + grace_s
        unfinished = [w.name for w in self.workers if not w.join(deadline - time.monotonic())]
        if unfinished:
            log.warning("still running after %.0f s, abandoned: %s", grace_s, ", ".join(unfinished))
        return not unfinished


def _region_of(client: Any) -> str:
    region = getattr(getattr(client, "meta", None), "region_name", None)
    return str(region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION)
