"""Per-account request rate limits: what an account may send, and the token bucket that holds it there; no I/O.

An account's limit is a steady rate (requests per second) and a burst (how
many requests may arrive at once after a quiet spell): API Gateway's token
bucket, whose capacity is the burst and which refills at the rate. On AWS
the account's usage plan holds the limit (its API Gateway API key, which the
authorizer returns as the usage identifier, is in exactly one plan); locally
devstack's API server holds it with the same bucket (`admit` below). An
account the operator has set nothing for has DEFAULT_RATE_LIMIT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# What an account gets until the operator sets its own (`python -m ops keys rate-limit`).
DEFAULT_RATE = 10
DEFAULT_BURST = 50
# API Gateway's default limits of a whole AWS account and region (10,000 requests/s,
# burst 5,000): a usage plan cannot give one client more than the account has.
MAX_RATE = 10_000
MAX_BURST = 5_000


class InvalidRateLimit(ValueError):
    """A rate or burst the operator may not set (the message names which)."""


@dataclass(frozen=True)
class RateLimit:
    """Requests per second (rate) and at once (burst), both whole numbers of at least 1.

    Whole requests per second, at least one: the wait a refused request is
    told (Retry-After, whole seconds) is then always 1 s, on AWS (a static
    gateway response header) and locally alike. A limit under one request
    per second is a quota, which this API does not offer.
    """

    rate: int
    burst: int

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, int) or not 1 <= self.rate <= MAX_RATE:
            raise InvalidRateLimit(f"rate must be a whole number of requests per second from 1 to {MAX_RATE}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or not 1 <= self.burst <= MAX_BURST:
            raise InvalidRateLimit(f"burst must be a whole number of requests from 1 to {MAX_BURST}")

    def describe(self) -> str:
        return f"{self.rate} requests/s, burst {self.burst}"


DEFAULT_RATE_LIMIT = RateLimit(DEFAULT_RATE, DEFAULT_BURST)


@dataclass(frozen=True)
class UsageKey:
    """The account's API Gateway API key: its id (for the usage plans) and value (the authorizer's usage identifier).

    Not a secret of the client's: clients never see or send it (the API's key
    source is the authorizer), it only names the account to API Gateway's
    throttling. Absent locally, where there is no API Gateway.
    """

    key_id: str
    value: str


@dataclass(frozen=True)
class AccountRateLimit:
    """What is stored for an account: its own limit (None: the default) and its usage key (None: none made yet)."""

    own: RateLimit | None = None
    usage_key: UsageKey | None = None

    @property
    def in_force(self) -> RateLimit:
        return self.own or DEFAULT_RATE_LIMIT

    @property
    def is_default(self) -> bool:
        return self.own is None


@dataclass(frozen=True)
class Admission:
    """A token bucket's answer: admitted, or refused with how long until a request would be."""

    admitted: bool
    # The bucket's state to keep, as GCRA's theoretical arrival time (see admit).
    next_arrival: float
    wait_s: float = 0.0

    @property
    def retry_after_s(self) -> int:
        """Retry-After: whole seconds, at least 1 (a header of 0 would invite an immediate retry)."""
        return max(1, math.ceil(self.wait_s))


def admit(next_arrival: float, now: float, limit: RateLimit) -> Admission:
    """One request at `now` against a bucket whose state is `next_arrival` (0.0 for a bucket never used).

    GCRA, the generic cell rate algorithm: the token bucket of capacity
    `burst` refilled at `rate`, kept as one number, the time at which the
    bucket would be full again ("theoretical arrival time"). A request is
    admitted when, with its own interval added, that time is at most `burst`
    intervals ahead of now; refused requests take no token. One float per
    account lets the local server share every bucket between its worker
    processes in a small block of shared memory (devstack/rate_limiter.py).
    """
    interval = 1.0 / limit.rate
    arrival = max(next_arrival, now) + interval
    ahead = arrival - now
    allowed_ahead = limit.burst * interval
    if ahead <= allowed_ahead + 1e-9:
        return Admission(True, arrival)
    # Refused: the state stays, and the request would fit once `ahead` shrinks to the allowance.
    return Admission(False, next_arrival, wait_s=ahead - allowed_ahead)


def usage_plan_name(prefix: str, limit: RateLimit) -> str:
    """The usage plan of every account with this limit (the default limit's is the stack's own, `<prefix>-api`)."""
    if limit == DEFAULT_RATE_LIMIT:
        return default_usage_plan_name(prefix)
    return f"{prefix}-rate-{limit.rate}-burst-{limit.burst}"


def default_usage_plan_name(prefix: str) -> str:
    """The stack's usage plan (infra/operations.yaml, ApiUsagePlan): DEFAULT_RATE_LIMIT."""
    return f"{prefix}-api"


def usage_key_name(prefix: str, account_id: str) -> str:
    """The name of an account's API Gateway API key."""
    return f"{prefix}-account-{account_id}"
