"""The feed checkpoint in DynamoDB: the highest contiguous seq on Kinesis, per feed, never moving backwards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from feed_bridge.aws import AWS_ERRORS, LazyClient, error_code


class CheckpointUnavailable(RuntimeError):
    """The checkpoint could not be read or written right now; code is the AWS error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class CheckpointStore(Protocol):
    """Durable storage of one feed's checkpoint."""

    def load(self) -> int:
        """The stored checkpoint, 0 if none yet (the feed then starts at seq 1)."""
        ...

    def save(self, seq: int) -> int:
        """Store seq unless the stored checkpoint is already >= seq; returns the checkpoint stored afterwards."""
        ...


class DynamoDBCheckpointStore:
    """Item {feed_id, seq, updated_at} in the checkpoints table, written with a condition so it only grows.

    The condition makes a late write (a slow retry, a second bridge by
    mistake) unable to move the checkpoint back, which would only cost
    duplicates, but also unable to hide that something else wrote ahead.
    """

    def __init__(
        self,
        table_name: str,
        feed_id: str,
        client: Any = None,
        client_factory: Callable[[], Any] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if client is None and client_factory is None:
            raise ValueError("need a client or a client_factory")
        self.table_name = table_name
        self.feed_id = feed_id
        self._client = LazyClient(client, client_factory or (lambda: None))
        self._clock = clock

    def load(self) -> int:
        try:
            answer = self._client.get().get_item(
                TableName=self.table_name, Key={"feed_id": {"S": self.feed_id}}, ConsistentRead=True
            )
        except AWS_ERRORS as exc:
            raise CheckpointUnavailable(error_code(exc), str(exc)) from exc
        item = answer.get("Item")
        return int(item["seq"]["N"]) if item and "seq" in item else 0

    def save(self, seq: int) -> int:
        try:
            self._client.get().put_item(
                TableName=self.table_name,
                Item={
                    "feed_id": {"S": self.feed_id},
                    "seq": {"N": str(seq)},
                    "updated_at": {"S": self._clock().isoformat(timespec="milliseconds").replace("+00:00", "Z")},
                },
                ConditionExpression="attribute_not_exists(#seq) OR #seq < :seq",
                ExpressionAttributeNames={"#seq": "seq"},
                ExpressionAttributeValues={":seq": {"N": str(seq)}},
            )
        except AWS_ERRORS as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return self.load()
            raise CheckpointUnavailable(error_code(exc), str(exc)) from exc
        return seq
