"""Rate limits' and usage keys' storage on a real emulator over HTTP: the accounts table, beside the risk limits."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from chalicelib.adapters.accounts_table import (
    DynamoDBAccountLimits,
    DynamoDBAccountRateLimits,
    account_record_class_for,
)
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.rate_limits import AccountRateLimit, RateLimit, UsageKey
from chalicelib.domain.risk import AccountLimits
from devstack.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def table(adapter_stack: dict[str, str]) -> str:
    return adapter_stack["AccountsTableName"]


def account() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


def test_an_account_without_an_item_has_the_default_and_no_usage_key(table: str) -> None:
    assert DynamoDBAccountRateLimits(account_record_class_for(table)).get(account()) == AccountRateLimit()


def test_a_limit_and_a_usage_key_are_stored_apart_from_each_other_and_from_the_risk_limits(table: str) -> None:
    rate_limits = DynamoDBAccountRateLimits(account_record_class_for(table))
    risk_limits = DynamoDBAccountLimits(account_record_class_for(table))
    who = account()
    risk_limits.set(who, AccountLimits(max_order_notional=Decimal("5000.25")))
    assert rate_limits.set_limit(who, RateLimit(20, 100)) == AccountRateLimit(RateLimit(20, 100))
    key = UsageKey("k3x9", "a-usage-value-of-40-characters-0123456789")
    assert rate_limits.set_usage_key(who, key) == AccountRateLimit(RateLimit(20, 100), key)
    # Back to the default: the limit goes, the usage key and the risk limits stay.
    assert rate_limits.set_limit(who, None) == AccountRateLimit(None, key)
    assert rate_limits.get(who) == AccountRateLimit(None, key)
    assert risk_limits.get(who) == AccountLimits(max_order_notional=Decimal("5000.25"))
    # And the risk limits' writes leave the rate limit as it is.
    rate_limits.set_limit(who, RateLimit(1, 1))
    risk_limits.set(who, AccountLimits(max_open_orders=3))
    assert rate_limits.get(who).own == RateLimit(1, 1)


def test_an_unreachable_table_is_storage_unavailable(table: str) -> None:
    dead = {"host": f"http://127.0.0.1:{free_port()}", "max_retry_attempts": 0, "connect_timeout_s": 0.5}
    rate_limits = DynamoDBAccountRateLimits(account_record_class_for(table, **dead))
    with pytest.raises(StorageUnavailable):
        rate_limits.get(account())
    with pytest.raises(StorageUnavailable):
        rate_limits.set_limit(account(), RateLimit(2, 2))
    with pytest.raises(StorageUnavailable):
        rate_limits.set_usage_key(account(), UsageKey("k", "v"))
