"""The SQS event source mapping: receive a batch, invoke the handler, delete only what Lambda would delete."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalice.app import SQSEventConfig

from devstack.runner.events import sqs_event
from devstack.runner.invocation import Invocation, LocalFunction
from devstack.runner.settings import MappingSettings
from devstack.runner.verdicts import (
    REPORT_BATCH_ITEM_FAILURES,
    BatchVerdict,
    lambda_verdict,
    messages_to_delete,
)
from devstack.runner.worker import AWS_ERRORS, Worker

# One logger for the whole runner, as before it was a package: log filters and lines stay the same.
log = logging.getLogger("devstack.runner")

SQS_MAX_MESSAGES_PER_CALL = 10  # ReceiveMessage and DeleteMessageBatch both cap at 10
# Lambda long-polls 20 s. Here 5: a stopping runner must wait for its receive to come back, because a
# receive abandoned in the emulator still takes the next messages and hides them for the visibility
# timeout (measured: a restarted runner's drain of 200 orders took 55 s instead of ~20). 5 s keeps a
# stop within the shutdown grace and an idle queue at 0.2 requests/s.
DEFAULT_WAIT_S = 5


@dataclass
class BatchReport:
    """One SQS batch: what was invoked, what Lambda semantics say to delete, and what was deleted."""

    function: str
    message_ids: list[str]
    invocation: Invocation
    verdict: BatchVerdict
    deleted_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SqsSource:
    """The parts of an SQSEventConfig that drive polling (the same values `chalice package` deploys)."""

    name: str
    queue_name: str
    batch_size: int
    window_s: float
    report_batch_item_failures: bool = False  # from infra/event_sources.json: Chalice cannot set it
    maximum_concurrency: int | None = None  # ScalingConfig.MaximumConcurrency; None: Lambda's own limit

    @classmethod
    def from_config(cls, config: SQSEventConfig, settings: MappingSettings | None = None) -> SqsSource:
        queue_name = config.queue or (config.queue_arn or "").rsplit(":", 1)[-1]
        return cls(
            config.name,
            queue_name,
            config.batch_size,
            float(config.maximum_batching_window_in_seconds),
            (settings or MappingSettings()).report_batch_item_failures,
            config.maximum_concurrency,
        )


class SqsPoller(Worker):
    """One concurrent batch of an SQS event source mapping: receive, invoke, delete what succeeded.

    Never changes the visibility of a message it delivered: failed messages
    come back after their visibility timeout (or sooner if the handler
    shortened it) and the queue's RedrivePolicy moves them to the DLQ, as on AWS.

    Idle, it long-polls (DEFAULT_WAIT_S) so an empty queue costs one request
    per poll, not a spin. Messages a receive returns after stop was requested
    are invoked like any others, as Lambda would: giving them back would spend
    one of their receives (ApproximateReceiveCount, which the handler's last-attempt
    rule and the RedrivePolicy count) without an invocation; the shutdown grace
    covers one batch and the handlers are idempotent.
    """

    def __init__(
        self,
        source: SqsSource,
        function: LocalFunction,
        sqs_client: Any,
        region: str,
        name: str | None = None,
        poll_wait_s: int = DEFAULT_WAIT_S,
        error_backoff_s: float = 1.0,
    ) -> None:
        super().__init__(name or f"sqs:{source.name}", source.name, error_backoff_s)
        self.source = source
        self.function = function
        self.sqs = sqs_client
        self.region = region
        self.poll_wait_s = poll_wait_s
        self.queue_url: str | None = None
        self.queue_arn: str | None = None
        # Told of every receive's message count by the mapping that scales this poller; True means retire.
        self.on_receive: Callable[[SqsPoller, int], bool] | None = None

    def resolve_queue(self) -> None:
        if self.queue_url is None:
            self.queue_url = str(self.sqs.get_queue_url(QueueName=self.source.queue_name)["QueueUrl"])
        if self.queue_arn is None:
            attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
            self.queue_arn = str(attributes["Attributes"]["QueueArn"])
            log.info(
                "%s: polling %s (batch %d, %s %s)",
                self.name,
                self.queue_arn,
                self.source.batch_size,
                REPORT_BATCH_ITEM_FAILURES,
                "on" if self.source.report_batch_item_failures else "off",
            )

    def _receive(self, max_messages: int, wait_s: int) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max(1, min(max_messages, SQS_MAX_MESSAGES_PER_CALL)),
            WaitTimeSeconds=wait_s,
            # Both spellings: older endpoints only know AttributeNames.
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def collect_batch(self) -> list[dict[str, Any]]:
        """One receive; with a batching window, more receives until batch_size or the window ends."""
        started = time.monotonic()
        messages = self._receive(self.source.batch_size, self.poll_wait_s)
        if not messages:
            # Guard against an endpoint that ignores WaitTimeSeconds: no busy loop.
            self.stopping.wait(max(0.0, self.poll_wait_s - (time.monotonic() - started)))
            return []
        if self.source.window_s <= 0:
            return messages
        deadline = time.monotonic() + self.source.window_s
        while len(messages) < self.source.batch_size and not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                messages += self._receive(
                    self.source.batch_size - len(messages), min(self.poll_wait_s, math.ceil(remaining))
                )
            except AWS_ERRORS as exc:
                # Invoke with what is in hand rather than let it sit invisible.
                log.warning("%s: receive failed inside the batching window: %s", self.name, exc)
                break
        return messages

    def poll_once(self) -> BatchReport | None:
        self.resolve_queue()
        messages = self.collect_batch()
        if self.on_receive is not None and self.on_receive(self, len(messages)):
            self.finished = True  # retired by the scaling policy; only an empty receive retires a poller
        if not messages:
            return None
        return self.process(messages)

    def process(self, messages: Sequence[Mapping[str, Any]]) -> BatchReport:
        assert self.queue_arn is not None, "resolve_queue() first"
        message_ids = [str(message["MessageId"]) for message in messages]
        invocation = self.function.invoke(sqs_event(messages, self.queue_arn, self.region))
        verdict = lambda_verdict(invocation, message_ids, self.source.report_batch_item_failures)
        if verdict.whole_batch and not invocation.failed:
            log.error("%s: whole batch failed: %s", self.function.name, verdict.reason)
        report = BatchReport(self.function.name, message_ids, invocation, verdict)
        report.deleted_ids = self.delete(messages_to_delete(messages, verdict))
        log.info(
            "invoked %s records=%d failures=%d duration_ms=%.0f request=%s",
            self.function.name,
            len(messages),
            len(messages) - len(report.deleted_ids),
            invocation.duration_ms,
            invocation.request_id,
        )
        return report

    def delete(self, messages: Sequence[Mapping[str, Any]]) -> list[str]:
        """DeleteMessageBatch in chunks of 10; returns the ids actually deleted."""
        deleted: list[str] = []
        for offset in range(0, len(messages), SQS_MAX_MESSAGES_PER_CALL):
            chunk = messages[offset : offset + SQS_MAX_MESSAGES_PER_CALL]
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
            try:
                response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except AWS_ERRORS as exc:
                # At-least-once, as on AWS: these messages will be delivered again.
                log.warning(
                    "%s: could not delete %d messages, they will be redelivered: %s", self.name, len(chunk), exc
                )
                continue
            for failure in response.get("Failed", []):
                log.warning("%s: delete failed for entry %s: %s", self.name, failure.get("Id"), failure.get("Message"))
            deleted += [str(chunk[int(ok["Id"])]["MessageId"]) for ok in response.get("Successful", [])]
        return deleted
