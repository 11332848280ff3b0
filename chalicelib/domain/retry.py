"""Retry policy for placement: exponential backoff with jitter, in whole seconds."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

_shared_rng = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_base_s: int
    backoff_max_s: int

    def is_last(self, attempt: int) -> bool:
        return attempt >= self.max_attempts

    def is_exhausted(self, attempts_made: int) -> bool:
        """No placement attempt is left: only the exchange's status can settle the order now."""
        return attempts_made >= self.max_attempts

    def delay_after(self, attempt: int, rng: random.Random | None = None) -> int:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        "Equal jitter": half the exponential delay is kept, the other half is
        random. Delays keep growing with the attempt (unlike full jitter)
        while retries of many orders that failed together still spread out.
        SQS visibility timeouts are whole seconds, hence the ceiling.
        """
        doubled: int = self.backoff_base_s << (max(attempt, 1) - 1)  # base * 2^(attempt-1)
        exponential = min(self.backoff_max_s, doubled)
        half = exponential / 2
        jittered = half + (rng or _shared_rng).uniform(0, half)
        return max(1, min(self.backoff_max_s, math.ceil(jittered)))
