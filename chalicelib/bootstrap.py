"""The composition root: builds the Dependencies the use cases run with, from settings and real adapters.

`production()` is what the deployed functions use: built once per process, on
first use (importing this module, or app.py, does no I/O; adapters connect
on their first call). `bootstrap(...)` builds a fresh set, with AWS clients
or an HTTP pool given by the caller where it wants to watch or replace them;
tests build theirs from in-memory fakes instead (tests/unit/fakes.py).
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

import urllib3
from botocore.config import Config

from chalicelib.adapters.accounts_table import (
    CachedAccountLimits,
    CachedAccountRateLimits,
    DynamoDBAccountLimits,
    DynamoDBAccountRateLimits,
    account_record_class_for,
)
from chalicelib.adapters.api_keys import DynamoDBApiKeyRepository, api_key_record_class_for
from chalicelib.adapters.cursor_table import DynamoDBCursorStore, cursor_record_class_for
from chalicelib.adapters.exchange import HttpExchange
from chalicelib.adapters.executions_table import DynamoDBExecutionRepository, execution_record_class_for
from chalicelib.adapters.orders_table import DynamoDBOrderRepository, order_record_class_for
from chalicelib.adapters.queue import SqsOrdersQueue, SqsQueue
from chalicelib.adapters.reference_prices import HttpReferencePrices
from chalicelib.adapters.venue_credential import SecretsManagerCredential
from chalicelib.clock import Clock, utc_now
from chalicelib.config import Settings, get_settings
from chalicelib.domain.retry import RetryPolicy
from chalicelib.domain.risk import RiskLimits
from chalicelib.service.dependencies import Dependencies, RiskSources, StreamSources, Timings


def bootstrap(
    settings: Settings | None = None,
    *,
    sqs_client: Any = None,
    exchange_pool: urllib3.PoolManager | None = None,
    secretsmanager_client: Any = None,
    clock: Clock = utc_now,
) -> Dependencies:
    """The production adapters for these settings (default: the environment's).

    sqs_client (a boto3 SQS client) serves every queue instead of clients of
    their own; secretsmanager_client reads the venue credential (else a client
    of its own, made on the first exchange call). DynamoDB goes through PynamoDB, which makes its own client per
    table: `aws_clients()` hands those out, e.g. to count calls.
    """
    settings = settings or get_settings()
    return Dependencies(
        orders=order_repository(settings),
        orders_queue=orders_queue(settings, sqs_client),
        exchange=exchange(settings, exchange_pool, secretsmanager_client),
        retry_policy=retry_policy(settings),
        timings=timings(settings),
        executions=execution_repository(settings),
        executions_failed_queue=executions_failed_queue(settings, sqs_client),
        order_events_failed_queue=order_events_failed_queue(settings, sqs_client),
        api_keys=api_key_repository(settings),
        # Read at most every RATE_LIMITS_CACHE_TTL_S (60 s) per account and process.
        account_rate_limits=CachedAccountRateLimits(account_rate_limits_repository(settings)),
        orders_dead_letter_queue=orders_dead_letter_queue(settings, sqs_client),
        reconciler_cursor=reconciler_cursor(settings),
        risk=risk_sources(settings, exchange_pool, secretsmanager_client),
        stream=stream_sources(settings),
        clock=clock,
    )


@functools.cache
def production() -> Dependencies:
    """The deployed functions' dependencies, built on first use and kept for the life of the process."""
    return bootstrap()


def aws_clients(dependencies: Dependencies) -> list[Any]:
    """The botocore clients the dependencies' AWS adapters call through (fakes have none), created if need be."""
    adapters = (
        dependencies.orders,
        dependencies.executions,
        dependencies.api_keys,
        dependencies.orders_queue,
        dependencies.executions_failed_queue,
        dependencies.order_events_failed_queue,
        dependencies.orders_dead_letter_queue,
        dependencies.reconciler_cursor,
        dependencies.risk.account_limits,
        dependencies.account_rate_limits,
    )
    return [adapter.client for adapter in adapters if hasattr(adapter, "client")]


# --- One adapter each: the parts of bootstrap(), and what the operator CLI uses. ---
# Each call builds a new adapter with a client of its own: the ones the app's
# handlers use are production()'s (count their calls through aws_clients()).


def order_repository(settings: Settings | None = None) -> DynamoDBOrderRepository:
    settings = settings or get_settings()
    return DynamoDBOrderRepository(
        order_record_class_for(settings.orders_table_name, **dynamodb_connection(settings)),
        list_max_items_read=settings.list_max_items_read,
    )


def execution_repository(settings: Settings | None = None) -> DynamoDBExecutionRepository:
    settings = settings or get_settings()
    records = execution_record_class_for(settings.executions_table_name, **dynamodb_connection(settings))
    return DynamoDBExecutionRepository(records)


def api_key_repository(settings: Settings | None = None) -> DynamoDBApiKeyRepository:
    settings = settings or get_settings()
    records = api_key_record_class_for(settings.api_keys_table_name, **dynamodb_connection(settings))
    return DynamoDBApiKeyRepository(records)


def orders_queue(settings: Settings | None = None, sqs_client: Any = None) -> SqsOrdersQueue:
    settings = settings or get_settings()
    return SqsOrdersQueue(settings.orders_queue_name, sqs_client, client_config=aws_client_config(settings))


def executions_failed_queue(settings: Settings | None = None, sqs_client: Any = None) -> SqsQueue:
    settings = settings or get_settings()
    return SqsQueue(settings.executions_failed_queue_name, sqs_client, client_config=aws_client_config(settings))


def order_events_failed_queue(settings: Settings | None = None, sqs_client: Any = None) -> SqsQueue:
    settings = settings or get_settings()
    return SqsQueue(settings.order_events_failed_queue_name, sqs_client, client_config=aws_client_config(settings))


def orders_dead_letter_queue(settings: Settings | None = None, sqs_client: Any = None) -> SqsQueue:
    settings = settings or get_settings()
    return SqsQueue(settings.orders_dead_letter_queue_name, sqs_client, client_config=aws_client_config(settings))


def reconciler_cursor(settings: Settings | None = None) -> DynamoDBCursorStore:
    settings = settings or get_settings()
    return DynamoDBCursorStore(
        cursor_record_class_for(settings.feed_checkpoints_table_name, **dynamodb_connection(settings))
    )


def exchange(
    settings: Settings | None = None, pool: urllib3.PoolManager | None = None, secretsmanager_client: Any = None
) -> HttpExchange:
    settings = settings or get_settings()
    # The secret is read on the first exchange call (a function that never calls the venue never reads it).
    credential = SecretsManagerCredential(
        settings.exchange_credential_secret_name, secretsmanager_client, client_config=aws_client_config(settings)
    )
    return HttpExchange(
        str(settings.exchange_url), timeout_s=settings.exchange_timeout_s, pool=pool, credential=credential
    )


def account_limits_repository(settings: Settings | None = None) -> DynamoDBAccountLimits:
    """The accounts table itself, uncached: what the operator tool reads and writes."""
    settings = settings or get_settings()
    records = account_record_class_for(settings.accounts_table_name, **dynamodb_connection(settings))
    return DynamoDBAccountLimits(records)


def account_rate_limits_repository(settings: Settings | None = None) -> DynamoDBAccountRateLimits:
    """The accounts table's rate limits and usage keys, uncached: what the operator tool reads and writes."""
    settings = settings or get_settings()
    records = account_record_class_for(settings.accounts_table_name, **dynamodb_connection(settings))
    return DynamoDBAccountRateLimits(records)


def risk_defaults(settings: Settings | None = None) -> RiskLimits:
    settings = settings or get_settings()
    return RiskLimits(
        max_order_notional=settings.default_max_order_notional,
        max_open_orders=settings.default_max_open_orders,
        max_order_quantity=settings.default_max_order_quantity,
    )


def risk_sources(
    settings: Settings | None = None, pool: urllib3.PoolManager | None = None, secretsmanager_client: Any = None
) -> RiskSources:
    settings = settings or get_settings()
    # Same venue, same credential as order entry (read on the first market order's price, if ever).
    credential = SecretsManagerCredential(
        settings.exchange_credential_secret_name, secretsmanager_client, client_config=aws_client_config(settings)
    )
    return RiskSources(
        # Limits read at most every LIMITS_CACHE_TTL_S (30 s) per account and process.
        account_limits=CachedAccountLimits(account_limits_repository(settings)),
        reference_prices=HttpReferencePrices(str(settings.exchange_url), pool=pool, credential=credential),
        defaults=risk_defaults(settings),
    )


def stream_sources(settings: Settings | None = None) -> StreamSources:
    """The order event log, the stream's connections and tokens, and the management API that pushes to them."""
    # Imported here: only the functions that build them pay for their modules (see app.py).
    from chalicelib.adapters.connection_management import ManagementApiPusher  # noqa: PLC0415
    from chalicelib.adapters.order_events_table import (  # noqa: PLC0415
        DynamoDBOrderEventLog,
        order_event_record_class_for,
    )
    from chalicelib.adapters.stream_connections_table import (  # noqa: PLC0415
        DynamoDBStreamConnections,
        DynamoDBStreamTokens,
        stream_connection_record_class_for,
    )
    from chalicelib.adapters.stream_listeners_table import stream_listener_record_class_for  # noqa: PLC0415

    settings = settings or get_settings()
    retention = timedelta(days=settings.order_events_retention_days)
    connection_records = stream_connection_record_class_for(
        settings.stream_connections_table_name, **dynamodb_connection(settings)
    )
    return StreamSources(
        event_log=DynamoDBOrderEventLog(
            order_event_record_class_for(settings.order_events_table_name, **dynamodb_connection(settings)),
            retention=retention,
        ),
        connections=DynamoDBStreamConnections(
            connection_records,
            stream_listener_record_class_for(settings.order_events_table_name, **dynamodb_connection(settings)),
        ),
        tokens=DynamoDBStreamTokens(connection_records),
        pusher=ManagementApiPusher(settings.stream_management_url, client_config=aws_client_config(settings)),
        retention=retention,
        token_ttl=timedelta(seconds=settings.stream_token_ttl_s),
    )


def retry_policy(settings: Settings | None = None) -> RetryPolicy:
    settings = settings or get_settings()
    return RetryPolicy(
        max_attempts=settings.placement_max_attempts,
        backoff_base_s=settings.placement_backoff_base_s,
        backoff_max_s=settings.placement_backoff_max_s,
    )


def timings(settings: Settings | None = None) -> Timings:
    settings = settings or get_settings()
    return Timings(
        pending_sweep_after=timedelta(seconds=settings.pending_sweep_after_s),
        placement_lease=placement_lease(settings),
        exchange_call=timedelta(seconds=exchange_call_s(settings)),
        cancel_resend_interval=timedelta(seconds=settings.cancel_resend_interval_s),
    )


def placement_lease(settings: Settings) -> timedelta:
    # Measured from before the claim is written, so it must outlast the claim
    # write (every attempt of it), the exchange call (connect + read) and a
    # margin: until then a placement we sent may still land.
    claim_write_s = (settings.aws_connect_timeout_s + settings.aws_read_timeout_s) * settings.aws_max_attempts
    return timedelta(seconds=claim_write_s + exchange_call_s(settings) + 5)


def exchange_call_s(settings: Settings) -> float:
    """The longest one call to the exchange can take: HttpExchange's connect and read timeouts."""
    return min(settings.exchange_timeout_s, 2.0) + settings.exchange_timeout_s


def aws_client_config(settings: Settings) -> Config:
    """The timeouts and retries every AWS client of ours uses (the benchmark's floors use them too)."""
    return Config(
        connect_timeout=settings.aws_connect_timeout_s,
        read_timeout=settings.aws_read_timeout_s,
        retries={"mode": "standard", "max_attempts": settings.aws_max_attempts},
    )


def dynamodb_connection(settings: Settings) -> dict[str, Any]:
    """The same budget as PynamoDB model Meta settings."""
    # PynamoDB counts retries, botocore counts attempts: the same budget.
    return {
        "connect_timeout_s": settings.aws_connect_timeout_s,
        "read_timeout_s": settings.aws_read_timeout_s,
        "max_retry_attempts": settings.aws_max_attempts - 1,
    }
