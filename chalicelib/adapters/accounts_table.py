"""Accounts' pre-trade risk limits in DynamoDB through PynamoDB (the AccountsTable, one item per account).

Every attribute is optional: an account without an item, or an item without
a limit, has the default from settings for it (domain/risk.py). Only the
operator writes here (`python -m ops accounts limits`); the API reads, through
a short in-process cache (CachedAccountLimits) so that most creates cost no
extra read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

from chalicelib.adapters.dynamodb import DynamoDBTable, decimal_or_none, table_meta
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.risk import AccountLimits

# An operator's change reaches every warm API function within this long; short enough that
# lowering a leaked key's account's limits takes effect soon, long enough that an account
# placing orders steadily costs one read per function per half minute, not one per order.
LIMITS_CACHE_TTL_S = 30.0
# A bound on the memory a long-lived process spends on accounts it saw once.
LIMITS_CACHE_MAX_ACCOUNTS = 10_000


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
        self._ttl_s = ttl_s
        self._clock = clock
        self._max_accounts = max_accounts
        self._cached: dict[str, tuple[float, AccountLimits]] = {}
        self._lock = threading.Lock()  # the local API server calls from several threads

    @property
    def client(self) -> Any:
        """The wrapped table's botocore client (bootstrap.aws_clients counts its calls)."""
        return getattr(self._repository, "client", None)

    def get(self, account_id: str) -> AccountLimits:
        now = self._clock()
        with self._lock:
            hit = self._cached.get(account_id)
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        # A read that fails is not cached: the next create asks again (and fails closed meanwhile).
        limits = self._repository.get(account_id)
        with self._lock:
            if len(self._cached) >= self._max_accounts:
                self._cached.clear()
            self._cached[account_id] = (now, limits)
        return limits

    def set(self, account_id: str, limits: AccountLimits) -> AccountLimits:
        stored = self._repository.set(account_id, limits)
        with self._lock:
            self._cached.pop(account_id, None)
        return stored
