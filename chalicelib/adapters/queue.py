"""The orders queue on SQS: each message asks for an order to be placed, or for its cancel to reach the exchange."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import botocore.session
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from botocore.config import Config


class QueueUnavailable(Exception):
    """The queue could not be reached or refused the request."""


class OrdersQueue(Protocol):
    """The work our own workers owe orders: placements and cancel requests, delivered at least once."""

    def request_placement(self, order_id: str, correlation_id: str | None = None, delay_s: int = 0) -> None:
        """Ask, at least once, for the order to be placed (or, attempts exhausted, settled), after delay_s."""

    def request_cancel(self, order_id: str, correlation_id: str | None = None) -> None:
        """Ask, at least once, for the exchange to be asked to cancel the order."""

    def retry_after(self, receipt_handle: str, delay_s: int) -> None:
        """Let a received message come back after delay_s instead of the default visibility timeout."""


class MessageSender(Protocol):
    def send(self, body: str) -> None:
        """Put one message on the queue; QueueUnavailable if it could not."""


class OrderAction(StrEnum):
    PLACE = "place"
    CANCEL = "cancel"


@dataclass(frozen=True)
class OrderMessage:
    """What one message on the orders queue asks for."""

    order_id: str
    # Follows the order from the HTTP request into every log line about it.
    correlation_id: str | None = None
    action: OrderAction = OrderAction.PLACE

    def to_json(self) -> str:
        return json.dumps({"order_id": self.order_id, "correlation_id": self.correlation_id, "action": self.action})


def placement_message(order_id: str, correlation_id: str | None = None) -> str:
    return OrderMessage(order_id, correlation_id, OrderAction.PLACE).to_json()


def cancel_message(order_id: str, correlation_id: str | None = None) -> str:
    return OrderMessage(order_id, correlation_id, OrderAction.CANCEL).to_json()


def parse_order_message(message_body: str) -> OrderMessage:
    """What a message on the orders queue asks for; ValueError if it names no order or an unknown action."""
    try:
        payload = json.loads(message_body)
    except json.JSONDecodeError as exc:
        raise ValueError("orders queue message is not JSON") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("order_id"), str):
        raise ValueError("orders queue message has no order_id")
    correlation_id = payload.get("correlation_id")
    # Messages written before cancels existed carry no action: placements.
    action_text = payload.get("action", OrderAction.PLACE.value)
    try:
        action = OrderAction(action_text)
    except ValueError:
        raise ValueError(f"orders queue message has an unknown action {action_text!r}") from None
    return OrderMessage(str(payload["order_id"]), correlation_id if isinstance(correlation_id, str) else None, action)


class SqsQueue:
    """One SQS queue found by name; the client (unless given) and the URL are fetched on first use."""

    def __init__(self, queue_name: str, sqs_client: Any = None, client_config: Config | None = None) -> None:
        self._queue_name = queue_name
        self._client = sqs_client
        self._client_config = client_config
        self._queue_url: str | None = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        # Created on first use so that importing the handler module does no
        # I/O; under a lock and from a session of its own, because the first
        # use may come from several worker threads at once and a shared
        # session is not thread-safe. The same botocore client boto3's
        # client() would return, from botocore directly: PynamoDB imports
        # botocore anyway, and boto3 (with s3transfer) would add its import
        # to every sending function's cold start (bench/cold_start.py).
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = botocore.session.Session().create_client("sqs", config=self._client_config)
        return self._client

    @property
    def queue_url(self) -> str:
        if self._queue_url is None:
            try:
                self._queue_url = str(self.client.get_queue_url(QueueName=self._queue_name)["QueueUrl"])
            except (BotoCoreError, ClientError) as exc:
                raise QueueUnavailable(f"could not find queue {self._queue_name}") from exc
        return self._queue_url

    def send(self, body: str, delay_s: int = 0) -> None:
        try:
            self.client.send_message(QueueUrl=self.queue_url, MessageBody=body, DelaySeconds=delay_s)
        except (BotoCoreError, ClientError) as exc:
            raise QueueUnavailable(f"could not send to {self._queue_name}") from exc


class SqsOrdersQueue(SqsQueue):
    """The orders queue (OrdersQueue) on SQS."""

    def request_placement(self, order_id: str, correlation_id: str | None = None, delay_s: int = 0) -> None:
        self.send(placement_message(order_id, correlation_id), delay_s)

    def request_cancel(self, order_id: str, correlation_id: str | None = None) -> None:
        self.send(cancel_message(order_id, correlation_id))

    def retry_after(self, receipt_handle: str, delay_s: int) -> None:
        try:
            self.client.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay_s
            )
        except (BotoCoreError, ClientError) as exc:
            raise QueueUnavailable("could not change message visibility") from exc
