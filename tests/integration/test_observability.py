"""Metrics (EMF) and structured logs as a deployed function emits them, checked in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chalicelib.adapters.orders_table import DynamoDBOrderRepository, order_record_class_for
from chalicelib.domain.model import Order, OrderTerms, OrderType, Side

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]

SWEEP = """
from app import app
from devstack.lambda_context import FunctionSpec
from devstack.runner.events import scheduled_event
app.handler_map["sweep_pending_orders"](
    scheduled_event("arn:aws:events:us-east-1:123456789012:rule/sweep", "us-east-1"),
    FunctionSpec("brokerage-test-sweep_pending_orders").new_context(),
)
"""


def test_the_sweep_emits_its_metric_and_json_logs_with_the_order(adapter_stack: dict[str, str]) -> None:
    repository = DynamoDBOrderRepository(order_record_class_for(adapter_stack["OrdersTableName"]))
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    order = repository.add(
        Order.create("acct-1", OrderTerms(OrderType.MARKET, Side.BUY, "US0378331005", 1, None), long_ago, "corr-obs-1"),
        sweep_after=long_ago + timedelta(seconds=1),
    )
    env = {
        **os.environ,
        "ORDERS_TABLE_NAME": adapter_stack["OrdersTableName"],
        "ORDERS_QUEUE_NAME": adapter_stack["OrdersQueueName"],
        "POWERTOOLS_METRICS_DISABLED": "false",
        "POWERTOOLS_DEV": "false",
    }
    result = subprocess.run(
        [sys.executable, "-c", SWEEP], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    emf = [line for line in lines if "_aws" in line]
    assert emf, result.stdout
    reenqueued = emf[-1]["OrdersReenqueued"]  # EMF lists a metric's values when it has several
    total = sum(reenqueued) if isinstance(reenqueued, list) else reenqueued
    assert total >= 1
    assert emf[-1]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Brokerage"
    assert any(line.get("message") == "re-enqueued stuck pending orders" for line in lines)
    assert repository.get(order.id).version == order.version + 1  # type: ignore[union-attr]  # swept: sweep time moved
