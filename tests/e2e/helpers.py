"""What the e2e tests share besides fixtures: the stack's settings, the simulator's record, authenticated reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import requests

from devstack.stack import LocalStack

# Small numbers so that retries, the DLQ and the sweep happen within seconds.
E2E_SETTINGS = {
    "RESOURCE_PREFIX": "e2e",
    "EXCHANGE_LATENCY_S": "0.05",
    "EXCHANGE_FAILURE_RATE": "0",
    "PLACEMENT_MAX_ATTEMPTS": "3",
    "PLACEMENT_BACKOFF_BASE_S": "1",
    "PENDING_SWEEP_AFTER_S": "4",
    # Long enough for a report to come through the feed on a loaded machine before the reconciler
    # asks (CI once saw a fill merged from the status answer first), short for the tests' deadlines.
    "RECONCILE_SETTLE_S": "10",
    "EXCHANGE_EXEC_DELAY_S": "0.05",
    "EXCHANGE_LIMIT_TTL_S": "1",
    "FEED_LINGER_S": "0.05",
}


# What the e2e stack starts with; every test that changes a knob gets these back.
EXCHANGE_DEFAULTS: dict[str, float | str | None] = {
    "failure_rate": 0.0,
    "latency_s": 0.05,
    "exec_delay_s": 0.05,
    "limit_ttl_s": 1.0,
    "reject_rate": 0.02,
    "cancel_rate": 0.03,
    "feed_duplicate_rate": 0.0,
    "feed_reorder_rate": 0.0,
    "feed_loss_rate": 0.0,
    "lost_answer_rate": 0.0,
    "lost_answer_order_rate": 0.0,
    "status_failure_rate": 0.0,
    "limit_outcome": "random",
    "session_close_utc": "20:00",
    "session_length_s": None,
    "price_tick_s": 1.0,
    "price_step_bps": 10,
}


class Exchange:
    """The simulator's own record and knobs."""

    def __init__(self, url: str) -> None:
        self.url = url

    def configure(self, **knobs: float | str | None) -> None:
        requests.post(f"{self.url}/admin/config", json=knobs, timeout=5).raise_for_status()

    def record(self, client_order_id: str) -> dict[str, Any] | None:
        response = requests.get(f"{self.url}/admin/orders/{client_order_id}", timeout=5)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())


def auth(api_key: str) -> dict[str, str]:
    """The header that authenticates a request with this key (the stack's demo account: `stack.api_key`)."""
    return {"Authorization": f"Bearer {api_key}"}


def order_in_status(stack: LocalStack, order_id: str, *statuses: str) -> Callable[[], dict[str, Any] | None]:
    """The order (read as the demo account) once it is in one of the statuses, else None."""

    def check() -> dict[str, Any] | None:
        body = requests.get(f"{stack.api_url}/orders/{order_id}", headers=auth(stack.api_key), timeout=5).json()
        return body if body.get("status") in statuses else None

    return check


def dead_lettered(sqs: Any, stack: LocalStack, order_id: str) -> Callable[[], bool]:
    """A condition: the order's message is in the orders DLQ (looked at without consuming it)."""
    dlq_url = stack.resources["OrdersDeadLetterQueueUrl"]

    def in_dlq() -> bool:
        messages = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        for message in messages:
            sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
        return any(json.loads(m["Body"]).get("order_id") == order_id for m in messages)

    return in_dlq
