"""The venue credential: a Secrets Manager secret, read on first use, kept a while, read again when refused.

A plain botocore client rather than Powertools' parameters utility
(`get_secret`): that utility imports boto3 (~0.2 s, and ~0.4 s with its own
modules), which no function imports today (tests/unit/test_import_hygiene.py)
and which the placement function's cold start would pay for
(bench/cold_start.py). What it would give us, a value cached for a max age,
is the few lines below.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import botocore.session
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from botocore.config import Config

log = logging.getLogger(__name__)

# Long enough that a busy placement function reads the secret a few times an
# hour, short enough that a rotated credential reaches every warm function
# soon even without a refusal (a 401 reads it again at once).
CREDENTIAL_MAX_AGE_S = 300.0
# A failed read is the answer for this long: the threads queued on the lock
# behind it fail at once instead of each waiting out a read of its own (up to
# the client's timeouts and retries, ~8 s) in turn. Short, so a secret that is
# fixed, or a Secrets Manager that is back, is read on the next retry.
FAILED_READ_KEPT_S = 5.0


class CredentialUnavailable(Exception):
    """The credential could not be read (no such secret, no permission, no connection, not a string)."""


class VenueCredential(Protocol):
    """The secret we prove ourselves to the venue with."""

    def current(self) -> str:
        """The credential to send; CredentialUnavailable if it cannot be read."""

    def refreshed(self, refused: str) -> str:
        """A credential read again because the venue refused `refused` (rotated meanwhile?)."""


class StaticCredential:
    """A credential known in advance (tests, tools): never changes."""

    def __init__(self, value: str) -> None:
        self._value = value

    def current(self) -> str:
        return self._value

    def refreshed(self, refused: str) -> str:
        return self._value


class SecretsManagerCredential:
    """The SecretString of one secret; the client (unless given) is made on first use, so import does no I/O."""

    def __init__(
        self,
        secret_name: str,
        client: Any = None,
        *,
        client_config: Config | None = None,
        max_age_s: float = CREDENTIAL_MAX_AGE_S,
        failed_read_kept_s: float = FAILED_READ_KEPT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret_name = secret_name
        self._client = client
        self._client_config = client_config
        self._max_age_s = max_age_s
        self._clock = clock
        self._value: str | None = None
        self._read_at = 0.0
        self._failed_read_kept_s = failed_read_kept_s
        self._failure: CredentialUnavailable | None = None
        self._failed_at = 0.0
        # Placement calls the exchange from several threads: one read serves them all.
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            return self._client_locked()

    def current(self) -> str:
        with self._lock:
            if self._value is None:
                self._read()
            elif self._clock() - self._read_at >= self._max_age_s:
                try:
                    self._read()
                except CredentialUnavailable as exc:
                    # The credential we have still works until the venue says otherwise (a 401 reads again):
                    # Secrets Manager being down must not stop order entry. Asked again after another max age.
                    log.warning("venue credential kept: reading it again failed: %s", exc)
                    self._read_at = self._clock()
            assert self._value is not None
            return self._value

    def refreshed(self, refused: str) -> str:
        with self._lock:
            # Another thread may have read the new one since `refused` was handed out: one read per rotation.
            if self._value is None or self._value == refused:
                self._read()
            assert self._value is not None
            return self._value

    def _read(self) -> None:
        if self._failure is not None and self._clock() - self._failed_at < self._failed_read_kept_s:
            raise CredentialUnavailable(f"{self._failure} (a read failed just now: not asked again yet)")
        try:
            self._value, self._read_at = self._fetch(), self._clock()
            self._failure = None
        except CredentialUnavailable as exc:
            # Timed from the end of the failed read: the threads that waited for it are inside the window.
            self._failure, self._failed_at = exc, self._clock()
            raise

    def _fetch(self) -> str:
        try:
            answer = self._client_locked().get_secret_value(SecretId=self._secret_name)
        except (BotoCoreError, ClientError) as exc:
            raise CredentialUnavailable(f"secret {self._secret_name} unreadable: {_error_code(exc)}") from exc
        value = answer.get("SecretString")
        if not isinstance(value, str) or not value.strip():
            raise CredentialUnavailable(f"secret {self._secret_name} holds no string")
        return value.strip()

    def _client_locked(self) -> Any:
        if self._client is None:
            # botocore's own session, as the queues do (no boto3 on a function's cold start).
            self._client = botocore.session.Session().create_client("secretsmanager", config=self._client_config)
        return self._client


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__
