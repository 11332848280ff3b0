"""The tool's own AWS calls: lazily created, injectable boto3 clients and the SQS moves built on them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError

from ops.target import Target, TargetError

SQS_BATCH = 10  # ReceiveMessage, DeleteMessageBatch and ChangeMessageVisibilityBatch all cap at 10
# Long enough to get past SQS's sampling of a few servers (a short poll may
# answer "empty" while messages exist), short enough that a run ends promptly.
RECEIVE_WAIT_S = 1
_MISSING_QUEUE_CODES = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


class Aws:
    """boto3 clients for SQS, Kinesis, API Gateway and WAF, created on first use; tests may pass their own."""

    def __init__(self, sqs: Any = None, kinesis: Any = None, apigateway: Any = None, wafv2: Any = None) -> None:
        self._sqs = sqs
        self._kinesis = kinesis
        self._apigateway = apigateway
        self._wafv2 = wafv2
        self._queue_urls: dict[str, str] = {}

    @staticmethod
    def _client(service: str) -> Any:
        # Created after configure_environment(): the endpoint, region and
        # credentials come from the environment, the same for chalicelib.
        config = Config(connect_timeout=3, read_timeout=RECEIVE_WAIT_S + 10, retries={"mode": "standard"})
        return boto3.session.Session().client(service, config=config)

    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = self._client("sqs")
        return self._sqs

    @property
    def kinesis(self) -> Any:
        if self._kinesis is None:
            self._kinesis = self._client("kinesis")
        return self._kinesis

    @property
    def apigateway(self) -> Any:
        """API Gateway (REST APIs): accounts' API keys and usage plans, on a deployed stage only."""
        if self._apigateway is None:
            self._apigateway = self._client("apigateway")
        return self._apigateway

    @property
    def wafv2(self) -> Any:
        """WAF: the stage's per-address rule, which bounds an account's rate limit (ops/api_limits.py)."""
        if self._wafv2 is None:
            self._wafv2 = self._client("wafv2")
        return self._wafv2

    def queue_url(self, name: str) -> str:
        if name not in self._queue_urls:
            self._queue_urls[name] = str(self.sqs.get_queue_url(QueueName=name)["QueueUrl"])
        return self._queue_urls[name]


def check_reachable(target: Target, aws: Aws) -> None:
    """Fail early, with what to do, if the target's queues cannot be reached."""
    try:
        aws.queue_url(target.orders_queue)
    except EndpointConnectionError as exc:
        if target.is_local:
            raise TargetError(
                f"the local stack is not running: nothing answers at {target.endpoint_url} (start it with `make run` "
                "and export the 'AWS emulator:' URL it prints as AWS_ENDPOINT_URL)"
            ) from exc
        raise TargetError(f"cannot reach AWS: {exc}") from exc
    except NoCredentialsError as exc:
        raise TargetError(f"no AWS credentials for stage {target.stage}: set AWS_PROFILE or log in first") from exc
    except NoRegionError as exc:
        raise TargetError(
            "no AWS region: set AWS_REGION or AWS_DEFAULT_REGION, or use a profile with a region"
        ) from exc
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _MISSING_QUEUE_CODES:
            hint = "set RESOURCE_PREFIX to the local stack's prefix" if target.is_local else "is the stage deployed?"
            raise TargetError(f"no queue {target.orders_queue} on {target.describe()}: {hint}") from exc
        raise TargetError(f"cannot use {target.describe()}: {exc}") from exc


@dataclass(frozen=True)
class Message:
    """One received SQS message, with what an operator wants to see of it."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: datetime | None

    @classmethod
    def from_sqs(cls, raw: dict[str, Any]) -> Message:
        attributes = raw.get("Attributes", {})
        sent_ms = attributes.get("SentTimestamp")
        return cls(
            message_id=str(raw["MessageId"]),
            receipt_handle=str(raw["ReceiptHandle"]),
            body=str(raw.get("Body", "")),
            receive_count=int(attributes.get("ApproximateReceiveCount", 0)),
            sent_at=None if sent_ms is None else datetime.fromtimestamp(int(sent_ms) / 1000, UTC),
        )

    def json_body(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None if it is not one."""
        try:
            parsed = json.loads(self.body)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None


def receive(aws: Aws, queue_url: str, max_messages: int, hold_s: int) -> list[Message]:
    """Up to max_messages (at most 10), each hidden from other consumers for hold_s seconds."""
    response = aws.sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=max(1, min(max_messages, SQS_BATCH)),
        VisibilityTimeout=hold_s,
        WaitTimeSeconds=RECEIVE_WAIT_S,
        # Both spellings: older endpoints only know AttributeNames.
        AttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )
    return [Message.from_sqs(raw) for raw in response.get("Messages", [])]


def release(aws: Aws, queue_url: str, receipt_handles: Iterable[str]) -> None:
    """Make held messages visible again at once, as if they had never been received."""
    handles = list(receipt_handles)
    for start in range(0, len(handles), SQS_BATCH):
        chunk = handles[start : start + SQS_BATCH]
        # Best effort: a handle that expired meanwhile is visible again anyway.
        aws.sqs.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for index, handle in enumerate(chunk)
            ],
        )


def delete(aws: Aws, queue_url: str, receipt_handle: str) -> None:
    aws.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=receipt_handle)


def peek(aws: Aws, queue_url: str, limit: int, hold_s: int = 20) -> tuple[list[Message], bool]:
    """Up to limit messages without consuming them, and whether more may be waiting.

    SQS has no "peek": each message is received with a short visibility and
    made visible again before returning. If the tool dies in between, the
    messages come back on their own after hold_s. Receiving raises their
    receive count, which on a queue without a redrive policy (the DLQ, the
    executions-failed queue) changes nothing.
    """
    seen: dict[str, Message] = {}
    held: list[str] = []
    try:
        while len(seen) < limit:
            batch = receive(aws, queue_url, limit - len(seen), hold_s)
            held += [message.receipt_handle for message in batch]
            fresh = [message for message in batch if message.message_id not in seen]
            if not fresh:
                break
            for message in fresh:
                seen[message.message_id] = message
    finally:
        release(aws, queue_url, held)
    # Stopped at the limit rather than at an empty receive: there may be more.
    return list(seen.values()), len(seen) >= limit


def queue_depth(aws: Aws, queue_name: str) -> dict[str, Any]:
    """SQS's approximate counts: visible, in flight (received, not yet deleted), delayed."""
    url = aws.queue_url(queue_name)
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return {
        "name": queue_name,
        "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    }


def stream_shards(aws: Aws, stream_name: str) -> dict[str, Any]:
    """The stream's status, retention and shards (closed ones too, until they expire)."""
    summary = aws.kinesis.describe_stream_summary(StreamName=stream_name)["StreamDescriptionSummary"]
    shards: list[dict[str, Any]] = []
    request: dict[str, Any] = {"StreamName": stream_name}
    while True:
        page = aws.kinesis.list_shards(**request)
        for shard in page.get("Shards", []):
            shards.append(
                {
                    "shard_id": shard["ShardId"],
                    # A closed shard (after a resharding) has an ending sequence number.
                    "open": "EndingSequenceNumber" not in shard.get("SequenceNumberRange", {}),
                    "parent": shard.get("ParentShardId"),
                }
            )
        token = page.get("NextToken")
        if not token:
            break
        request = {"NextToken": token}  # ListShards refuses StreamName together with NextToken
    return {
        "name": stream_name,
        "status": summary.get("StreamStatus"),
        "retention_hours": summary.get("RetentionPeriodHours"),
        "open_shards": sum(1 for shard in shards if shard["open"]),
        "shards": shards,
    }
