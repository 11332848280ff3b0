"""Invoking a handler once as Lambda would: a fresh context, errors and the function timeout count as failures."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devstack.lambda_context import FunctionSpec

# One logger for the whole runner, as before it was a package: log filters and lines stay the same.
log = logging.getLogger("devstack.runner")

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class Invocation:
    """What happened when a handler ran once."""

    result: Any = None
    error: BaseException | None = None
    duration_ms: float = 0.0
    request_id: str = ""

    @property
    def failed(self) -> bool:
        return self.error is not None


class FunctionTimeout(Exception):
    """The handler ran past the function timeout; Lambda would have cut it off and failed the invocation."""


@dataclass(frozen=True)
class LocalFunction:
    """One Chalice handler with the Lambda configuration it runs under."""

    name: str
    handler: Handler
    spec: FunctionSpec

    def invoke(self, event: dict[str, Any]) -> Invocation:
        context = self.spec.new_context()
        started = time.monotonic()
        outcome = Invocation(request_id=context.aws_request_id)
        try:
            outcome.result = self.handler(event, context)
        except (Exception, SystemExit) as exc:
            # SystemExit too: on Lambda it fails the invocation, here it would
            # silently end the poller thread.
            outcome.error = exc
            log.error("handler %s raised (request %s)", self.name, context.aws_request_id, exc_info=exc)
        outcome.duration_ms = (time.monotonic() - started) * 1000
        if outcome.error is None and outcome.duration_ms > self.spec.timeout_s * 1000:
            # A thread cannot be cut off, but its result must count as lost,
            # so that messages are redelivered here exactly as on AWS.
            outcome.error = FunctionTimeout(f"{self.name} ran {outcome.duration_ms:.0f} ms > {self.spec.timeout_s} s")
            log.error("handler %s exceeded the function timeout; treated as failed", self.name)
        return outcome
