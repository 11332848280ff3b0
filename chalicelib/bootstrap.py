"""Builds the adapters from settings, once per process and only when first used (no I/O at import)."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from botocore.config import Config

from chalicelib.adapters.api_keys import DynamoDBApiKeyRepository, api_key_record_class_for
from chalicelib.adapters.dynamodb import DynamoDBOrderRepository, record_class_for
from chalicelib.adapters.exchange import HttpExchange
from chalicelib.adapters.executions_table import DynamoDBExecutionRepository, execution_record_class_for
from chalicelib.adapters.queue import SqsPlacementQueue, SqsQueue
from chalicelib.config import Settings, get_settings
from chalicelib.domain.retry import RetryPolicy


def _aws_client_config(settings: Settings) -> Config:
    return Config(
        connect_timeout=settings.aws_connect_timeout_s,
        read_timeout=settings.aws_read_timeout_s,
        retries={"mode": "standard", "max_attempts": settings.aws_max_attempts},
    )


def _dynamodb_connection(settings: Settings) -> dict[str, Any]:
    # PynamoDB counts retries, botocore counts attempts: the same budget.
    return {
        "connect_timeout_s": settings.aws_connect_timeout_s,
        "read_timeout_s": settings.aws_read_timeout_s,
        "max_retry_attempts": settings.aws_max_attempts - 1,
    }


@functools.cache
def order_repository() -> DynamoDBOrderRepository:
    settings = get_settings()
    return DynamoDBOrderRepository(record_class_for(settings.orders_table_name, **_dynamodb_connection(settings)))


@functools.cache
def execution_repository() -> DynamoDBExecutionRepository:
    settings = get_settings()
    records = execution_record_class_for(settings.executions_table_name, **_dynamodb_connection(settings))
    return DynamoDBExecutionRepository(records)


@functools.cache
def executions_failed_queue() -> SqsQueue:
    settings = get_settings()
    return SqsQueue(settings.executions_failed_queue_name, client_config=_aws_client_config(settings))


@functools.cache
def placement_queue() -> SqsPlacementQueue:
    settings = get_settings()
    return SqsPlacementQueue(settings.orders_queue_name, client_config=_aws_client_config(settings))


@functools.cache
def exchange() -> HttpExchange:
    settings = get_settings()
    return HttpExchange(str(settings.exchange_url), timeout_s=settings.exchange_timeout_s)


@functools.cache
def retry_policy() -> RetryPolicy:
    settings = get_settings()
    return RetryPolicy(
        max_attempts=settings.placement_max_attempts,
        backoff_base_s=settings.placement_backoff_base_s,
        backoff_max_s=settings.placement_backoff_max_s,
    )


def stuck_after() -> timedelta:
    return timedelta(seconds=get_settings().pending_sweep_after_s)


def placement_lease() -> timedelta:
    # Measured from before the claim is written, so it must outlast the claim
    # write (every attempt of it), the exchange call (connect + read) and a
    # margin: until then a placement we sent may still land.
    settings = get_settings()
    claim_write_s = (settings.aws_connect_timeout_s + settings.aws_read_timeout_s) * settings.aws_max_attempts
    exchange_call_s = min(settings.exchange_timeout_s, 2.0) + settings.exchange_timeout_s
    return timedelta(seconds=claim_write_s + exchange_call_s + 5)


@functools.cache
def api_key_repository() -> DynamoDBApiKeyRepository:
    settings = get_settings()
    records = api_key_record_class_for(settings.api_keys_table_name, **_dynamodb_connection(settings))
    return DynamoDBApiKeyRepository(records)
