"""Per-account request rate limits for the local API server, as API Gateway's usage plans apply them on AWS.

After the authorizer allowed a request, its account takes a token from its
bucket (chalicelib/domain/rate_limits.py: GCRA, the token bucket of the
account's rate and burst); without one the request is API Gateway's THROTTLED
answer, 429 with Retry-After, and never reaches the app.

The server is several gunicorn worker processes (devstack/api_server.py), each
with threads, and API Gateway's limit is one per account whatever serves it:
so the buckets live in shared memory, created before the workers fork
(`preload_app`) and inherited by each, behind one process-shared lock. A
bucket is one float, so a fixed table of slots holds them: an account's slot
is found by the hash of its id (open addressing over a few probes). A bucket
whose state lies in the past is full, the same as a bucket never used, so such
a slot may be reused for another account without changing anything either
account sees. No library does this part: the ones that share limits between
processes do it through a server (Redis, memcached) or a Manager process.

Each process reads an account's limit through a 60 s cache
(CachedAccountRateLimits, CachedLimits below): a new limit set with `python -m
ops keys rate-limit` holds within a minute.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from chalicelib import bootstrap
from chalicelib.adapters.accounts_table import (
    RATE_LIMITS_CACHE_TTL_S,
    AccountRateLimitsRepository,
    CachedAccountRateLimits,
)
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.rate_limits import DEFAULT_RATE_LIMIT, Admission, RateLimit, admit

# Accounts whose buckets are held at once; more than a local stack ever sees.
SLOTS = 4096
# How far from its home slot an account's bucket may be: a few cache lines, ample at this load factor.
PROBES = 16
# Far longer than the lock is ever held (microseconds), short enough not to hang a request.
LOCK_TIMEOUT_S = 1.0

log = logging.getLogger("devstack.rate_limiter")


class RateLimitSource(Protocol):
    def limit_of(self, account_id: str) -> RateLimit:
        """The account's limit in force."""


def _account_hash(account_id: str) -> int:
    # 64 bits, never 0 (0 marks a free slot): a collision of two account ids is not a concern here.
    digest = int.from_bytes(hashlib.blake2b(account_id.encode(), digest_size=8).digest(), "little")
    return digest or 1


class SharedBuckets:
    """Every account's bucket state in memory shared with the processes forked after this is made."""

    def __init__(self, slots: int = SLOTS, probes: int = PROBES, clock: Callable[[], float] = time.monotonic) -> None:
        # CLOCK_MONOTONIC is one clock for every process of the machine, so the states compare.
        self._clock = clock
        self._slots = slots
        self._probes = min(probes, slots)
        self._keys: Any = multiprocessing.RawArray(ctypes.c_uint64, slots)
        self._states: Any = multiprocessing.RawArray(ctypes.c_double, slots)
        self._lock = multiprocessing.Lock()

    def admit(self, account_id: str, limit: RateLimit) -> Admission:
        """One request of the account now: admitted (its token taken) or refused with the wait."""
        account = _account_hash(account_id)
        home = account % self._slots
        # Held for microseconds; a worker killed outright while holding it (gunicorn's SIGKILL of a
        # wedged worker) would hold it forever, so waiting is bounded and then the request goes through.
        if not self._lock.acquire(timeout=LOCK_TIMEOUT_S):
            log.error(
                "rate limit buckets locked for %s s: request of %s admitted unthrottled", LOCK_TIMEOUT_S, account_id
            )
            return Admission(True, 0.0)
        try:
            now = self._clock()
            slot = self._slot_for(account, home, now)
            admission = admit(self._states[slot] if self._keys[slot] == account else 0.0, now, limit)
            self._keys[slot] = account
            self._states[slot] = admission.next_arrival
        finally:
            self._lock.release()
        return admission

    def _slot_for(self, account: int, home: int, now: float) -> int:
        """The account's slot, else a free or full (past) one, else the fullest of the probed ones."""
        reusable: int | None = None
        fullest = home
        for step in range(self._probes):
            slot = (home + step) % self._slots
            if self._keys[slot] == account:
                return slot
            if reusable is None and (self._keys[slot] == 0 or self._states[slot] <= now):
                reusable = slot
            if self._states[slot] < self._states[fullest]:
                fullest = slot
        # Every probed bucket is in use: the one nearest to full is forgotten (its account's next
        # request finds a full bucket, at most its burst early): a local stack with 4,096 busy accounts.
        return reusable if reusable is not None else fullest


class CachedLimits:
    """Accounts' limits in force from the accounts table, each read at most once a minute per process.

    When the table cannot be read, an account keeps the limit last read for
    it (CachedAccountRateLimits), and one never read gets the default for this
    request only: the next asks the table again, so a blip never pins an
    account with a high limit (the demo account's) to the default for a
    minute. The authorizer before this step reads the same table and answers
    503 when it cannot, so this is mostly an app without that table (the API
    server's test app).
    """

    def __init__(
        self,
        repository_factory: Callable[[], AccountRateLimitsRepository],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Made on first use, in the worker: a botocore client must not cross the fork.
        self._factory = repository_factory
        self._clock = clock
        self._cached: CachedAccountRateLimits | None = None
        self._lock = threading.Lock()

    def limit_of(self, account_id: str) -> RateLimit:
        with self._lock:
            if self._cached is None:
                # Usage keys mean nothing here (no API Gateway): every account is read once a minute.
                self._cached = CachedAccountRateLimits(
                    self._factory(),
                    ttl_s=RATE_LIMITS_CACHE_TTL_S,
                    clock=self._clock,
                    without_usage_key_ttl_s=RATE_LIMITS_CACHE_TTL_S,
                )
            cached = self._cached
        try:
            return cached.get(account_id).in_force
        except StorageUnavailable:
            log.warning("rate limit of account %s unreadable: the default applies to this request", account_id)
            return DEFAULT_RATE_LIMIT


class AccountThrottle:
    """The gateway's throttling step: an account's request admitted, or the seconds to wait (Retry-After)."""

    def __init__(self, limits: RateLimitSource, buckets: SharedBuckets) -> None:
        self._limits = limits
        self._buckets = buckets

    def retry_after(self, account_id: str) -> int | None:
        """None if the account may make this request now, else Retry-After in whole seconds (at least 1)."""
        admission = self._buckets.admit(account_id, self._limits.limit_of(account_id))
        return None if admission.admitted else admission.retry_after_s


def accounts_table_throttle() -> AccountThrottle:
    """The throttle over the accounts table the environment's settings name, as the app's adapters find it.

    Made before the server forks its workers (the shared buckets must be);
    the table's client is made in each worker, on its first request.
    """
    return AccountThrottle(CachedLimits(bootstrap.account_rate_limits_repository), SharedBuckets())
