"""What the dead-letter queues hold: placement messages, Lambda on-failure records and parked reports."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from chalicelib.adapters.queue import parse_order_message
from ops.aws import Message

# chalicelib/entrypoints/executions.py parks a report whose order we do not
# have with this reason; it is the only parked report a retry can fix.
_UNKNOWN_ORDER = re.compile(r"unknown order (\S+)")


@dataclass(frozen=True)
class FailedBatch:
    """Lambda's on-failure invocation record: a range of one shard's records it gave up on."""

    shard_id: str
    start: str
    end: str
    stream_name: str | None
    batch_size: int | None
    condition: str | None  # e.g. RetryAttemptsExhausted, RecordAgeExceeded
    function_error: str | None


@dataclass(frozen=True)
class ParkedReport:
    """One record the executions handler set aside itself, with the reason and the record's data."""

    reason: str
    partition_key: str
    data: str  # base64, as in the Lambda event
    stream_name: str | None
    sequence_number: str | None

    @property
    def unknown_order_id(self) -> str | None:
        """The order the report named, if it was parked only because that order did not exist yet."""
        match = _UNKNOWN_ORDER.fullmatch(self.reason)
        return match.group(1) if match else None


def stream_name_of(arn: object) -> str | None:
    """arn:aws:kinesis:<region>:<account>:stream/<name> -> name."""
    if not isinstance(arn, str) or "/" not in arn:
        return None
    return arn.rsplit("/", 1)[1]


def parse_failed_execution(message: Message) -> FailedBatch | ParkedReport | None:
    """The executions-failed message's meaning, or None if it is neither known shape."""
    body = message.json_body()
    if body is None:
        return None
    info = body.get("KinesisBatchInfo")
    if isinstance(info, dict):
        return _failed_batch(body, info)
    if isinstance(body.get("data"), str) and isinstance(body.get("partitionKey"), str):
        return ParkedReport(
            reason=str(body.get("reason", "")),
            partition_key=body["partitionKey"],
            data=body["data"],
            stream_name=stream_name_of(body.get("eventSourceARN")),
            sequence_number=None if body.get("sequenceNumber") is None else str(body["sequenceNumber"]),
        )
    return None


def _failed_batch(body: dict[str, Any], info: dict[str, Any]) -> FailedBatch | None:
    if not all(isinstance(info.get(key), str) for key in ("shardId", "startSequenceNumber", "endSequenceNumber")):
        return None
    request = body.get("requestContext") or {}
    response = body.get("responseContext") or {}
    size = info.get("batchSize")
    return FailedBatch(
        shard_id=info["shardId"],
        start=info["startSequenceNumber"],
        end=info["endSequenceNumber"],
        stream_name=stream_name_of(info.get("streamArn")),
        batch_size=size if isinstance(size, int) else None,
        condition=request.get("condition"),
        function_error=response.get("functionError"),
    )


def placement_order_id(message: Message) -> str | None:
    """The order a placement message names, or None if it is not a placement message."""
    try:
        return parse_order_message(message.body).order_id
    except ValueError:
        return None
