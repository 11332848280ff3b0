"""Schedules: the period of a Chalice schedule expression, and the worker that fires it as EventBridge would."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from chalice.app import Cron, Rate

from devstack.runner.events import scheduled_event
from devstack.runner.invocation import Invocation, LocalFunction
from devstack.runner.worker import Worker

# One logger for the whole runner, as before it was a package: log filters and lines stay the same.
log = logging.getLogger("devstack.runner")

CRON_PERIOD_S = 60.0  # no cron parser: once a minute is the finest any cron rule fires
RATE_UNIT_S = {"MINUTE": 60, "MINUTES": 60, "HOUR": 3600, "HOURS": 3600, "DAY": 86_400, "DAYS": 86_400}
_RATE_STRING = re.compile(r"^\s*rate\(\s*(\d+)\s+([a-zA-Z]+)\s*\)\s*$")


def schedule_period_s(expression: str | Rate | Cron | Any) -> float:
    """Seconds between firings of a Chalice schedule expression (cron rules: once a minute)."""
    if isinstance(expression, Rate):
        return float(expression.value * RATE_UNIT_S[expression.unit.upper()])
    if isinstance(expression, str):
        match = _RATE_STRING.match(expression)
        if match and match.group(2).upper() in RATE_UNIT_S:
            return float(int(match.group(1)) * RATE_UNIT_S[match.group(2).upper()])
    return CRON_PERIOD_S


class ScheduleFirer(Worker):
    """An EventBridge schedule rule: invokes its target every period, first one period after start."""

    def __init__(
        self, function: LocalFunction, rule_arn: str, region: str, period_s: float, name: str | None = None
    ) -> None:
        super().__init__(name or f"schedule:{function.name}", function.name)
        self.function = function
        self.rule_arn = rule_arn
        self.region = region
        self.period_s = period_s
        self._next_fire: float | None = None

    def fire(self) -> Invocation:
        invocation = self.function.invoke(scheduled_event(self.rule_arn, self.region))
        log.info(
            "invoked %s records=1 failures=%d duration_ms=%.0f request=%s",
            self.function.name,
            int(invocation.failed),
            invocation.duration_ms,
            invocation.request_id,
        )
        return invocation

    def poll_once(self) -> Invocation | None:
        now = time.monotonic()
        if self._next_fire is None:
            self._next_fire = now + self.period_s
        if self.stopping.wait(max(0.0, self._next_fire - now)):
            return None
        # A fixed cadence that skips missed ticks, as EventBridge does after a slow run.
        self._next_fire = max(self._next_fire + self.period_s, time.monotonic())
        return self.fire()
