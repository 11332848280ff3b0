"""Accounts' settings in DynamoDB through PynamoDB (the AccountsTable, one item per account): pre-trade risk limits,
request rate limits and the account's API Gateway usage key.

Every attribute is optional: an account without an item, or an item without
a limit, has the default for it (risk limits: settings, domain/risk.py; rate
limits: domain/rate_limits.py). Only the operator writes here (`python -m ops
accounts limits`, `ops keys rate-limit`, `ops keys create`); the API, the
authorizer and the local API server read through short in-process caches
(CachedAccountLimits, CachedAccountRateLimits) so that most requests cost no
extra read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

from chalicelib.adapters.dynamodb import DynamoDBTable, decimal_or_none, table_meta
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.rate_limits import AccountRateLimit, RateLimit, UsageKey
from chalicelib.domain.risk import AccountLimits

# An operator's change reaches every warm API function within this long; short enough that
# lowering a leaked key's account's limits takes effect soon, long enough that an account
# placing orders steadily costs one read per function per half minute, not one per order.
LIMITS_CACHE_TTL_S = 30.0
# A bound on the memory a long-lived process spends on accounts it saw once.
LIMITS_CACHE_MAX_ACCOUNTS = 10_000
# The authorizer (the account's usage key) and the local API server (its rate limit) read an
# account's rate settings at most this often per process: a new limit holds within a minute.
RATE_LIMITS_CACHE_TTL_S = 60.0
# An account without a usage key of its own (on the stack's shared fallback key) is read again
# this soon: giving it one (`ops keys rate-limit --account A --default`) holds within seconds.
WITHOUT_USAGE_KEY_CACHE_TTL_S = 5.0

T = TypeVar("T")

log = logging.getLogger(__name__)


class AccountLimitsRepository(Protocol):
    def get(self, account_id: str) -> AccountLimits:
        """The limits the operator set for the account (all None if none); StorageUnavailable if unreadable."""

    def set(self, account_id: str, limits: AccountLimits) -> AccountLimits:
        """Set the given (not None) limits, keep the others; the account's limits after the write."""


class AccountRecord(Model):
    class Meta:
        table_name = "accounts"  # replaced per table by account_record_class_for()

    account_id = UnicodeAttribute(hash_key=True)
    # A string, as the orders' prices: PynamoDB reads numbers back as floats.
    max_order_notional = UnicodeAttribute(null=True)
    max_open_orders = NumberAttribute(null=True)
    max_order_quantity = NumberAttribute(null=True)
    # Requests per second and burst; both or neither (neither: the default).
    rate_limit = NumberAttribute(null=True)
    burst_limit = NumberAttribute(null=True)
    # The account's API Gateway API key (AWS only): its id and value.
    usage_key_id = UnicodeAttribute(null=True)
    usage_key = UnicodeAttribute(null=True)


def account_record_class_for(table_name: str, **connection: Any) -> type[AccountRecord]:
    """An AccountRecord bound to one table (connection: see table_meta)."""
    return type("BoundAccountRecord", (AccountRecord,), {"Meta": table_meta(table_name, **connection)})


def _to_limits(record: AccountRecord) -> AccountLimits:
    return AccountLimits(
        max_order_notional=decimal_or_none(record.max_order_notional),
        max_open_orders=None if record.max_open_orders is None else int(record.max_open_orders),
        max_order_quantity=None if record.max_order_quantity is None else int(record.max_order_quantity),
    )


class DynamoDBAccountLimits(DynamoDBTable[AccountRecord]):
    """AccountLimitsRepository on one DynamoDB table; see infra/resources.yaml (AccountsTable)."""

    def get(self, account_id: str) -> AccountLimits:
        try:
            # Consistent: the operator tool shows what it just wrote; the API's reads go through the cache.
            record = self._records.get(account_id, consistent_read=True)
        except self._records.DoesNotExist:
            return AccountLimits()
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not read the limits of account {account_id}") from exc
        return _to_limits(record)

    def set(self, account_id: str, limits: AccountLimits) -> AccountLimits:
        records = self._records
        actions: list[Any] = []
        if limits.max_order_notional is not None:
            actions.append(records.max_order_notional.set(str(limits.max_order_notional)))
        if limits.max_open_orders is not None:
            actions.append(records.max_open_orders.set(limits.max_open_orders))
        if limits.max_order_quantity is not None:
            actions.append(records.max_order_quantity.set(limits.max_order_quantity))
        if not actions:
            return self.get(account_id)
        record = records(account_id)
        try:
            # One UpdateItem: creates the item if need be, and leaves the limits not given as they are.
            record.update(actions=actions)
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not write the limits of account {account_id}") from exc
        return _to_limits(record)


class PerAccountCache(Generic[T]):
    """Values read per account, kept ttl_s in this process; at most max_accounts (then forgotten all at once)."""

    def __init__(
        self,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_accounts: int = LIMITS_CACHE_MAX_ACCOUNTS,
    ) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._max_accounts = max_accounts
        self._cached: dict[str, tuple[float, T]] = {}
        self._lock = threading.Lock()  # the local API server calls from several threads

    def get(self, account_id: str, read: Callable[[str], T], fresh_for: Callable[[T], float] | None = None) -> T:
        """The value read within its time to live (ttl_s, or fresh_for(value)), else read now."""
        now = self._clock()
        with self._lock:
            hit = self._cached.get(account_id)
        if hit is not None and now - hit[0] < (self._ttl_s if fresh_for is None else fresh_for(hit[1])):
            return hit[1]
        # A read that fails is not cached: the next caller asks again.
        value = read(account_id)
        with self._lock:
            if len(self._cached) >= self._max_accounts:
                self._cached.clear()
            self._cached[account_id] = (now, value)
        return value

    def last(self, account_id: str) -> T | None:
        """The value last read, however long ago (None if never, or forgotten)."""
        with self._lock:
            hit = self._cached.get(account_id)
        return None if hit is None else hit[1]

    def forget(self, account_id: str) -> None:
        with self._lock:
            self._cached.pop(account_id, None)


class CachedAccountLimits:
    """An AccountLimitsRepository's reads kept for ttl_s per account in this process; writes go straight through."""

    def __init__(
        self,
        repository: AccountLimitsRepository,
        ttl_s: float = LIMITS_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        max_accounts: int = LIMITS_CACHE_MAX_ACCOUNTS,
    ) -> None:
        self._repository = repository
        self._cache: PerAccountCache[AccountLimits] = PerAccountCache(ttl_s, clock, max_accounts)

    @property
    def client(self) -> Any:
        """The wrapped table's botocore client (bootstrap.aws_clients counts its calls)."""
        return getattr(self._repository, "client", None)

    def get(self, account_id: str) -> AccountLimits:
        # A read that fails is not cached: the next create asks again (and fails closed meanwhile).
        return self._cache.get(account_id, self._repository.get)

    def set(self, account_id: str, limits: AccountLimits) -> AccountLimits:
        stored = self._repository.set(account_id, limits)
        self._cache.forget(account_id)
        return stored


# --- Request rate limits and the usage key ---


class AccountRateLimitsRepository(Protocol):
    def get(self, account_id: str) -> AccountRateLimit:
        """The account's own rate limit and usage key (both None if none); StorageUnavailable if unreadable."""


class AccountRateLimitsStore(AccountRateLimitsRepository, Protocol):
    """What the operator tool writes (the uncached table)."""

    def set_limit(self, account_id: str, limit: RateLimit | None) -> AccountRateLimit:
        """Set the account's own limit (None: back to the default); the account's settings after the write."""

    def set_usage_key(self, account_id: str, usage_key: UsageKey) -> AccountRateLimit:
        """Record the account's API Gateway API key; the account's settings after the write."""


def _to_rate_limit(record: AccountRecord) -> AccountRateLimit:
    own = None
    if record.rate_limit is not None and record.burst_limit is not None:
        own = RateLimit(int(record.rate_limit), int(record.burst_limit))
    usage_key = None
    if record.usage_key_id is not None and record.usage_key is not None:
        usage_key = UsageKey(record.usage_key_id, record.usage_key)
    return AccountRateLimit(own, usage_key)


class DynamoDBAccountRateLimits(DynamoDBTable[AccountRecord]):
    """AccountRateLimitsStore on the accounts table (the same items as DynamoDBAccountLimits, other attributes)."""

    def get(self, account_id: str) -> AccountRateLimit:
        try:
            record = self._records.get(account_id, consistent_read=True)
        except self._records.DoesNotExist:
            return AccountRateLimit()
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not read the rate limit of account {account_id}") from exc
        return _to_rate_limit(record)

    def set_limit(self, account_id: str, limit: RateLimit | None) -> AccountRateLimit:
        records = self._records
        actions: list[Any]
        if limit is None:
            actions = [records.rate_limit.remove(), records.burst_limit.remove()]
        else:
            actions = [records.rate_limit.set(limit.rate), records.burst_limit.set(limit.burst)]
        return self._update(account_id, actions, "rate limit")

    def set_usage_key(self, account_id: str, usage_key: UsageKey) -> AccountRateLimit:
        records = self._records
        actions = [records.usage_key_id.set(usage_key.key_id), records.usage_key.set(usage_key.value)]
        return self._update(account_id, actions, "usage key")

    def _update(self, account_id: str, actions: list[Any], what: str) -> AccountRateLimit:
        record = self._records(account_id)
        try:
            # One UpdateItem: creates the item if need be; the risk limits stay as they are.
            record.update(actions=actions)
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not write the {what} of account {account_id}") from exc
        return _to_rate_limit(record)


class CachedAccountRateLimits:
    """An AccountRateLimitsRepository's reads kept per account in this process; the last read when the table fails.

    An account with a usage key is read again after ttl_s; one without, after
    without_usage_key_ttl_s (short: the authorizer gives such an account the
    stack's shared fallback key, and the operator's fix, its own key, should
    hold at once). When the table cannot be read, the account's last read
    answers, however old: a blip of the accounts table must not turn every
    request away (the authorizer's 503). Only an account never read yet in
    this process raises StorageUnavailable then.
    """

    def __init__(
        self,
        repository: AccountRateLimitsRepository,
        ttl_s: float = RATE_LIMITS_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        max_accounts: int = LIMITS_CACHE_MAX_ACCOUNTS,
        without_usage_key_ttl_s: float = WITHOUT_USAGE_KEY_CACHE_TTL_S,
    ) -> None:
        self._repository = repository
        self._ttl_s = ttl_s
        self._without_usage_key_ttl_s = without_usage_key_ttl_s
        self._cache: PerAccountCache[AccountRateLimit] = PerAccountCache(ttl_s, clock, max_accounts)

    @property
    def client(self) -> Any:
        """The wrapped table's botocore client (bootstrap.aws_clients counts its calls)."""
        return getattr(self._repository, "client", None)

    def get(self, account_id: str) -> AccountRateLimit:
        try:
            return self._cache.get(account_id, self._repository.get, self._fresh_for)
        except StorageUnavailable:
            last = self._cache.last(account_id)
            if last is None:
                raise
            log.warning("accounts table unreadable: account %s's rate settings as last read", account_id)
            return last

    def _fresh_for(self, settings: AccountRateLimit) -> float:
        return self._ttl_s if settings.usage_key is not None else self._without_usage_key_ttl_s
