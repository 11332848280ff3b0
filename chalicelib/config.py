"""Settings of every function, read from the environment once and validated as a typed model."""

from __future__ import annotations

import functools
from decimal import Decimal

from pydantic import Field, HttpUrl, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

# Defaults name the local stack's resources (infra/resources.yaml with its
# default ResourcePrefix), so `chalice local` and the runner need no setup.
DEFAULT_PREFIX = "brokerage-local"


class Settings(BaseSettings):
    """Everything a function may be configured with; nothing else reads os.environ."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    orders_table_name: str = Field(default=f"{DEFAULT_PREFIX}-orders", min_length=3)
    orders_queue_name: str = Field(default=f"{DEFAULT_PREFIX}-orders", min_length=1)
    executions_stream_name: str = Field(default=f"{DEFAULT_PREFIX}-executions", min_length=1)
    executions_table_name: str = Field(default=f"{DEFAULT_PREFIX}-executions", min_length=3)
    api_keys_table_name: str = Field(default=f"{DEFAULT_PREFIX}-api-keys", min_length=3)
    executions_failed_queue_name: str = Field(default=f"{DEFAULT_PREFIX}-executions-failed", min_length=1)
    executions_batch_size: int = Field(default=100, ge=1, le=10_000)
    executions_batch_window_s: int = Field(default=1, ge=0, le=300)

    exchange_url: HttpUrl = HttpUrl("http://127.0.0.1:8001")
    exchange_timeout_s: float = Field(default=5.0, gt=0, le=60)

    # Attempts must match the queue's RedrivePolicy maxReceiveCount (infra
    # parameter PlacementMaxAttempts): the message reaches the DLQ right after
    # the attempt that marks the order failed.
    placement_max_attempts: int = Field(default=3, ge=1, le=100)
    placement_backoff_base_s: int = Field(default=2, ge=1, le=900)
    placement_backoff_max_s: int = Field(default=900, ge=1, le=43_200)
    placement_batch_size: int = Field(default=10, ge=1, le=10)
    placement_batch_window_s: int = Field(default=0, ge=0, le=300)

    # Business bounds on what one order may ask for (422 naming the bound);
    # the request model keeps fixed sanity bounds above these.
    max_order_quantity: int = Field(default=1_000_000, ge=1, le=1_000_000_000)
    max_limit_price: Decimal = Field(default=Decimal("1000000"), gt=0, le=Decimal("1000000000"))

    # An order still pending this long after its last sign of progress is
    # re-enqueued by the sweep: long enough that a healthy queue has long
    # picked it up, short enough that a lost message costs little delay.
    pending_sweep_after_s: int = Field(default=60, ge=1, le=86_400)
    pending_sweep_batch: int = Field(default=500, ge=1, le=10_000)

    # Outbound AWS calls on the request path give up quickly: the API stays
    # fast while a dependency is down, and the sweep covers a lost SQS send.
    aws_connect_timeout_s: float = Field(default=1.0, gt=0, le=30)
    aws_read_timeout_s: float = Field(default=3.0, gt=0, le=60)
    aws_max_attempts: int = Field(default=2, ge=1, le=10)


class ConfigurationError(RuntimeError):
    """The environment does not describe a valid configuration."""


@functools.cache
def get_settings() -> Settings:
    """Settings, validated once per process (a Lambda cold start)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"invalid configuration: {problems}") from exc
