"""The worker thread every event source runs on: poll, log errors and back off, never die of an AWS error."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

# One logger for the whole runner, as before it was a package: log filters and lines stay the same.
log = logging.getLogger("devstack.runner")

AWS_ERRORS = (BotoCoreError, ClientError)


class SourceUnavailable(Exception):
    """Something a poller needs is missing (a stack output, a queue): logged and retried like an AWS error."""


RETRYABLE = (*AWS_ERRORS, SourceUnavailable)


class Worker(ABC):
    """A thread that repeatedly polls one event source; errors are logged, never fatal."""

    def __init__(self, name: str, source_name: str, error_backoff_s: float = 1.0) -> None:
        self.name = name
        self.source_name = source_name
        self.error_backoff_s = error_backoff_s
        self.stopping = threading.Event()
        self.finished = False  # set by a worker whose source has ended (a closed Kinesis shard)
        self._thread: threading.Thread | None = None
        self._consecutive_errors = 0

    def start(self) -> None:
        # Daemon: if an invocation outlives the shutdown grace period the
        # process still exits; its messages reappear after their visibility timeout.
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        self.stopping.set()

    def join(self, timeout_s: float) -> bool:
        if self._thread is not None:
            self._thread.join(max(0.0, timeout_s))
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        while not self.stopping.is_set() and not self.finished:
            try:
                self.poll_once()
            except RETRYABLE as exc:
                self._note_error(exc)
                self.stopping.wait(self.error_backoff_s)
            except Exception:
                log.exception("%s: unexpected error; retrying", self.name)
                self.stopping.wait(self.error_backoff_s)
            else:
                if self._consecutive_errors:
                    log.info("%s: recovered after %d errors", self.name, self._consecutive_errors)
                    self._consecutive_errors = 0
        self.on_stop()

    def _note_error(self, exc: BaseException) -> None:
        # First error and every tenth after it: an emulator that is down for a
        # while should not flood the log once a second.
        self._consecutive_errors += 1
        if self._consecutive_errors % 10 == 1:
            log.warning("%s: AWS call failed (%d in a row), retrying: %s", self.name, self._consecutive_errors, exc)

    @abstractmethod
    def poll_once(self) -> Any:
        """Wait briefly for work, do one unit of it, return a report (or None if there was none)."""

    def on_stop(self) -> None:  # noqa: B027 - a hook: most workers have nothing to save
        """Runs on the worker's thread once it has stopped polling: a last chance to save progress."""
