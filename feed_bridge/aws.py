"""boto3 clients for the bridge, created on first use with bounded timeouts and no hidden retries."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

# What a failed AWS call can raise: the service's error (ClientError), a
# transport problem (BotoCoreError: connection refused, timeout) or an answer
# botocore cannot parse (an emulator's error page).
AWS_ERRORS: tuple[type[Exception], ...] = (ClientError, BotoCoreError, ResponseParserError)


def error_code(exc: Exception) -> str:
    """The AWS error code of a ClientError, else the exception's class name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


def client_factory(service: str, connect_timeout_s: float, read_timeout_s: float) -> Callable[[], Any]:
    """A function that makes a client for service; endpoint, region and credentials come from the environment."""

    def make() -> Any:
        # A session of its own: boto3's default session is not thread-safe and
        # clients are created lazily from worker threads.
        return boto3.session.Session().client(
            service,
            config=Config(
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
                # The bridge's loops retry with their own backoff and know about
                # the shutdown grace; botocore retrying underneath would hide
                # the time an attempt takes.
                retries={"total_max_attempts": 1},
            ),
        )

    return make


class LazyClient:
    """An injected client, or one made by factory on first use (once, even from several threads)."""

    def __init__(self, client: Any, factory: Callable[[], Any]) -> None:
        self._client = client
        self._factory = factory
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
        return self._client
