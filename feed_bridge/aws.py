"""boto3 clients for the bridge (made on first use, bounded timeouts, no hidden retries) and the venue credential."""

from __future__ import annotations

import threading
import time
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
# How long a read venue credential is used before it is read again (a refused handshake reads it at once).
CREDENTIAL_MAX_AGE_S = 300.0


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


class CredentialUnavailable(Exception):
    """The venue credential could not be read (no such secret, no permission, no connection, not a string)."""


class SecretCredential:
    """The venue credential: a Secrets Manager secret's string, read on first use, kept max_age_s, read again
    when the venue refused it (rotated meanwhile). Blocking: the bridge calls it from its AWS thread pool."""

    def __init__(
        self,
        secret_name: str,
        client: Any = None,
        client_factory: Callable[[], Any] | None = None,
        *,
        max_age_s: float = CREDENTIAL_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        def no_factory() -> Any:
            raise CredentialUnavailable("no Secrets Manager client")

        self.secret_name = secret_name
        self._client = LazyClient(client, client_factory or no_factory)
        self._max_age_s = max_age_s
        self._clock = clock
        self._value: str | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def current(self) -> str:
        with self._lock:
            if self._value is None or self._clock() - self._read_at >= self._max_age_s:
                self._read()
            assert self._value is not None
            return self._value

    def refreshed(self, refused: str) -> str:
        """The credential read again, unless it already changed since `refused` was handed out."""
        with self._lock:
            if self._value is None or self._value == refused:
                self._read()
            assert self._value is not None
            return self._value

    def _read(self) -> None:
        try:
            answer = self._client.get().get_secret_value(SecretId=self.secret_name)
        except AWS_ERRORS as exc:
            raise CredentialUnavailable(f"secret {self.secret_name} unreadable: {error_code(exc)}") from exc
        value = answer.get("SecretString")
        if not isinstance(value, str) or not value.strip():
            raise CredentialUnavailable(f"secret {self.secret_name} holds no string")
        self._value, self._read_at = value.strip(), self._clock()
