"""The app in this process through chalice.test, its routes and handlers running with in-memory fakes.

What API Gateway, SQS, Kinesis and EventBridge would hand the functions is
built here: an API key the fake store knows, and Lambda events whose message
ids, receipt handles and sequence numbers are unique (chalice.test gives every
record the same ones, which a batch's item failures could not tell apart).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

from chalice.test import Client

from app import create_app
from chalicelib.config import Settings
from chalicelib.domain.model import ExecType
from chalicelib.service.accounts import create_api_key
from tests.unit.fakes import Fakes


@contextmanager
def app_client(fakes: Fakes) -> Iterator[Client]:
    """A chalice.test client of the app wired to these fakes (each invocation asks them for its dependencies)."""
    with Client(create_app(fakes.dependencies, Settings())) as client:
        yield client


def bearer(fakes: Fakes, account_id: str) -> dict[str, str]:
    """Headers with a new API key of the account (the Authorization header: chalice.test's gateway reads only it)."""
    key = create_api_key(account_id, None, fakes.api_keys).plaintext
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def sqs_event(client: Client, bodies: list[str], receive_count: int = 1) -> dict[str, Any]:
    """An SQS event of these message bodies, each with its own message id and receipt handle."""
    event = client.events.generate_sqs_event(message_bodies=bodies, queue_name="orders")
    for n, record in enumerate(event["Records"]):
        record["messageId"] = f"message-{n}"
        record["receiptHandle"] = f"receipt-{n}"
        record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    return event


def kinesis_event(client: Client, payloads: list[bytes]) -> dict[str, Any]:
    """A Kinesis event of these record payloads, with increasing sequence numbers as on one shard."""
    event = client.events.generate_kinesis_event(message_bodies=payloads, stream_name="executions")
    for n, record in enumerate(event["Records"], start=1):
        record["kinesis"]["sequenceNumber"] = str(1000 + n)
        record["eventID"] = f"shardId-000000000000:{1000 + n}"
    return event


def fill_report(order_id: str, seq: int, quantity: int, at: datetime) -> bytes:
    """The feed bridge's message for a complete fill of `quantity` at 10.00 (docs/execution-feed.md)."""
    price = str(Decimal("10.00"))
    return json.dumps(
        {
            "seq": seq,
            "exec_id": f"E{seq}",
            "client_order_id": order_id,
            "exchange_order_id": f"X{seq}",
            "exec_type": ExecType.FILL.value,
            "last_qty": quantity,
            "last_price": price,
            "cum_qty": quantity,
            "leaves_qty": 0,
            "avg_price": price,
            "transact_time": at.isoformat(),
        }
    ).encode()
