"""The executions stream as a RecordSink: one PutRecords call per batch, per-record results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from feed_bridge.aws import AWS_ERRORS, LazyClient, error_code
from feed_bridge.records import Record
from feed_bridge.retry import SinkError


class StreamNotFound(RuntimeError):
    """The configured stream does not exist (a configuration error, not an outage)."""


class KinesisSink:
    """Puts records on a Kinesis stream; the boto3 client is injected or made on first use."""

    def __init__(self, stream_name: str, client: Any = None, client_factory: Callable[[], Any] | None = None) -> None:
        if client is None and client_factory is None:
            raise ValueError("need a client or a client_factory")
        self.stream_name = stream_name
        self._client = LazyClient(client, client_factory or (lambda: None))

    def check(self) -> None:
        """Raise StreamNotFound if the stream is missing, SinkError if it cannot be asked right now."""
        try:
            self._client.get().describe_stream_summary(StreamName=self.stream_name)
        except AWS_ERRORS as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise StreamNotFound(f"Kinesis stream {self.stream_name} does not exist") from exc
            raise SinkError(error_code(exc), str(exc)) from exc

    def put_records(self, records: Sequence[Record]) -> Sequence[str | None]:
        """One PutRecords call; per record None if stored, else its ErrorCode (e.g. ProvisionedThroughputExceeded)."""
        try:
            answer = self._client.get().put_records(
                StreamName=self.stream_name,
                Records=[{"Data": record.data, "PartitionKey": record.partition_key} for record in records],
            )
        except AWS_ERRORS as exc:
            raise SinkError(error_code(exc), str(exc)) from exc
        # Each entry has SequenceNumber and ShardId if stored, ErrorCode and
        # ErrorMessage if not; the order matches the request.
        return [entry.get("ErrorCode") or None for entry in answer.get("Records", [])]
