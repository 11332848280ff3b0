"""The orders queue: SQS messages that each ask for one order to be placed, or its cancel sent to the exchange."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


class QueueUnavailable(Exception):
    """The queue could not be reached or refused the request."""


class PlacementQueue(Protocol):
    def request_placement(self, order_id: str, correlation_id: str | None = None) -> None:
        """Ask, at least once, for the order to be placed."""

    def request_cancel(self, order_id: str, correlation_id: str | None = None) -> None:
        """Ask, at least once, for the exchange to be asked to cancel the order."""

    def retry_after(self, receipt_handle: str, delay_s: int) -> None:
        """Let a received message come back after delay_s instead of the default visibility timeout."""


class OrderAction(StrEnum):
    PLACE = "place"
    CANCEL = "cancel"


@dataclass(frozen=True)
class PlacementRequest:
    order_id: str
    # Follows the order from the HTTP request into every log line about it.
    correlation_id: str | None = None
    action: OrderAction = OrderAction.PLACE


def placement_message(order_id: str, correlation_id: str | None = None, action: OrderAction = OrderAction.PLACE) -> str:
    return json.dumps({"order_id": order_id, "correlation_id": correlation_id, "action": action.value})


def parse_placement_message(message_body: str) -> PlacementRequest:
    """What a message on the orders queue asks for; ValueError if it names no order or an unknown action."""
    try:
        payload = json.loads(message_body)
    except json.JSONDecodeError as exc:
        raise ValueError("placement message is not JSON") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("order_id"), str):
        raise ValueError("placement message has no order_id")
    correlation_id = payload.get("correlation_id")
    # Messages written before cancels existed carry no action: placements.
    action_text = payload.get("action", OrderAction.PLACE.value)
    try:
        action = OrderAction(action_text)
    except ValueError:
        raise ValueError(f"placement message has an unknown action {action_text!r}") from None
    return PlacementRequest(
        str(payload["order_id"]), correlation_id if isinstance(correlation_id, str) else None, action
    )


class SqsQueue:
    """One SQS queue found by name; the client and the URL are fetched on first use."""

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
        # use may come from several placement threads at once and boto3's
        # default session is not thread-safe.
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = boto3.session.Session().client("sqs", config=self._client_config)
        return self._client

    @property
    def queue_url(self) -> str:
        if self._queue_url is None:
            try:
                self._queue_url = str(self.client.get_queue_url(QueueName=self._queue_name)["QueueUrl"])
            except (BotoCoreError, ClientError) as exc:
                raise QueueUnavailable(f"could not find queue {self._queue_name}") from exc
        return self._queue_url

    def send(self, body: str) -> None:
        try:
            self.client.send_message(QueueUrl=self.queue_url, MessageBody=body)
        except (BotoCoreError, ClientError) as exc:
            raise QueueUnavailable(f"could not send to {self._queue_name}") from exc


class SqsPlacementQueue(SqsQueue):
    def request_placement(self, order_id: str, correlation_id: str | None = None) -> None:
        self.send(placement_message(order_id, correlation_id))

    def request_cancel(self, order_id: str, correlation_id: str | None = None) -> None:
        self.send(placement_message(order_id, correlation_id, OrderAction.CANCEL))

    def retry_after(self, receipt_handle: str, delay_s: int) -> None:
        try:
            self.client.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay_s
            )
        except (BotoCoreError, ClientError) as exc:
            raise QueueUnavailable("could not change message visibility") from exc
