"""The composition root: production dependencies from settings, once per process, with clients a caller may give."""

from __future__ import annotations

import boto3
import pytest

from chalicelib import bootstrap
from chalicelib.adapters.orders_table import DynamoDBOrderRepository
from chalicelib.adapters.queue import SqsOrdersQueue
from chalicelib.config import Settings

pytestmark = pytest.mark.unit


def test_the_settings_name_the_tables_queues_and_timings() -> None:
    settings = Settings(orders_table_name="t-orders", orders_queue_name="q-orders", pending_sweep_after_s=90)
    dependencies = bootstrap.bootstrap(settings)
    assert isinstance(dependencies.orders, DynamoDBOrderRepository)
    assert isinstance(dependencies.orders_queue, SqsOrdersQueue)
    assert dependencies.timings.pending_sweep_after.total_seconds() == 90
    # The lease outlasts every attempt of the claim write and the exchange call.
    assert dependencies.timings.placement_lease.total_seconds() == (1 + 3) * 2 + (2 + 5) + 5
    assert dependencies.retry_policy.max_attempts == settings.placement_max_attempts


def test_a_given_sqs_client_serves_every_queue_and_every_aws_client_is_handed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # botocore makes no client without one
    sqs = boto3.session.Session().client("sqs", region_name="us-east-1")
    dependencies = bootstrap.bootstrap(Settings(), sqs_client=sqs)
    clients = bootstrap.aws_clients(dependencies)
    assert [client for client in clients if client is sqs] == [sqs, sqs, sqs, sqs]
    assert sorted(client.meta.service_model.service_name for client in clients) == [
        "dynamodb",
        "dynamodb",
        "dynamodb",
        "dynamodb",
        "dynamodb",  # the accounts table (risk limits)
        "dynamodb",  # the accounts table again (rate limits and usage keys, the authorizer's)
        "sqs",
        "sqs",
        "sqs",
        "sqs",  # the order events failed queue
    ]


def test_production_is_built_once_per_process() -> None:
    assert bootstrap.production() is bootstrap.production()
