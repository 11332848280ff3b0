"""Settings of the feed bridge, read once from the environment and validated as a typed model."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, ValidationError, WebsocketUrl, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Kinesis PutRecords takes at most 500 records per call.
MAX_PUT_RECORDS = 500
# The local stack's resource prefix (chalicelib.config.DEFAULT_PREFIX, not imported: see BridgeSettings).
DEFAULT_PREFIX = "brokerage-local"


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 (bracketed or not) or localhost: a host whose traffic never leaves the machine."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BridgeSettings(BaseSettings):
    """Everything the bridge may be configured with; nothing else in feed_bridge reads os.environ.

    Its own model, not chalicelib.config: the bridge runs as a container
    service and must not drag the Lambda package's settings (or need its
    resource names) along.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    exchange_feed_url: WebsocketUrl = WebsocketUrl("ws://127.0.0.1:8002/feed")
    # The venue credential, sent as a bearer token on the feed's handshake (a Secrets Manager secret's name).
    exchange_credential_secret_name: str = Field(
        default=f"{DEFAULT_PREFIX}-exchange-credential", min_length=1, max_length=512
    )
    # No defaults for the resources: a bridge that silently wrote a production
    # feed into a local-named stream would lose it; the stack passes both.
    executions_stream_name: str = Field(min_length=1, max_length=128)
    feed_checkpoints_table_name: str = Field(min_length=3, max_length=255)
    feed_id: str = Field(default="exchange-sim", min_length=1, max_length=256)

    feed_batch_size: int = Field(default=MAX_PUT_RECORDS, ge=1, le=MAX_PUT_RECORDS)
    feed_linger_s: float = Field(default=0.1, ge=0, le=60)
    # Reading stops (and the WebSocket pushes back) once this many reports
    # wait for Kinesis, so an outage costs bounded memory, not a crash.
    feed_max_buffered: int = Field(default=20_000, ge=1, le=1_000_000)

    feed_reconnect_min_s: float = Field(default=0.1, gt=0, le=60)
    feed_reconnect_max_s: float = Field(default=5.0, gt=0, le=600)
    feed_put_retry_min_s: float = Field(default=0.05, gt=0, le=60)
    feed_put_retry_max_s: float = Field(default=5.0, gt=0, le=600)
    feed_open_timeout_s: float = Field(default=10.0, gt=0, le=300)
    feed_shutdown_grace_s: float = Field(default=10.0, gt=0, le=3_600)
    feed_stats_interval_s: float = Field(default=30.0, gt=0, le=86_400)

    # Each AWS call is bounded so a hung endpoint only delays the next retry;
    # the bridge's own loop is the only retry layer (botocore's is off).
    aws_connect_timeout_s: float = Field(default=2.0, gt=0, le=60)
    aws_read_timeout_s: float = Field(default=10.0, gt=0, le=300)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("exchange_feed_url")
    @classmethod
    def _encrypted_unless_loopback(cls, url: WebsocketUrl) -> WebsocketUrl:
        # The handshake carries the venue credential, and the feed moves money: in the clear only locally.
        if url.scheme == "ws" and not is_loopback_host(url.host or ""):
            raise ValueError(
                f"{url} is plain-text ws://, allowed only to a loopback host (127.0.0.0/8, localhost, [::1]); "
                "use wss://"
            )
        return url

    @model_validator(mode="after")
    def _bounds_in_order(self) -> BridgeSettings:
        if self.feed_reconnect_min_s > self.feed_reconnect_max_s:
            raise ValueError("FEED_RECONNECT_MIN_S must not exceed FEED_RECONNECT_MAX_S")
        if self.feed_put_retry_min_s > self.feed_put_retry_max_s:
            raise ValueError("FEED_PUT_RETRY_MIN_S must not exceed FEED_PUT_RETRY_MAX_S")
        return self


class ConfigurationError(RuntimeError):
    """The environment does not describe a valid configuration."""


def load_settings() -> BridgeSettings:
    """Settings from the environment, or ConfigurationError naming every bad variable."""
    try:
        return BridgeSettings()  # type: ignore[call-arg]  # required fields come from the environment
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper() or 'SETTINGS'}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"invalid configuration: {problems}") from exc
