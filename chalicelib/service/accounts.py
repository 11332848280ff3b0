"""Use cases of API keys: create one for an account, revoke or list them, tell which key a request carries and
which usage identifier (API Gateway API key) its account is throttled by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from chalicelib.adapters.accounts_table import AccountRateLimitsRepository
from chalicelib.adapters.api_keys import ApiKeyAlreadyExists, ApiKeyRepository
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.clock import Clock, utc_now
from chalicelib.domain.accounts import (
    DEFAULT_SCOPE,
    ApiKey,
    ApiKeyMissing,
    KeyScope,
    issue_key,
    key_id_of,
    validate_account_id,
    verify,
)
from chalicelib.observability import logger

# Key ids have 60 random bits, so a second collision in a row means something
# else is wrong (e.g. a broken random source), not bad luck.
_ISSUE_ATTEMPTS = 3


@dataclass(frozen=True)
class CreatedKey:
    key_id: str
    account_id: str
    plaintext: str  # the key itself: shown to the operator once, never stored
    scope: KeyScope = DEFAULT_SCOPE
    expires_at: datetime | None = None


@dataclass(frozen=True)
class AuthenticatedKey:
    """Who a request's key is: the account it acts for, and what it may do there."""

    key_id: str
    account_id: str
    scope: KeyScope


def create_api_key(
    account_id: str,
    label: str | None,
    keys: ApiKeyRepository,
    clock: Clock = utc_now,
    scope: KeyScope = DEFAULT_SCOPE,
    expires_in: timedelta | None = None,
) -> CreatedKey:
    """Issue and store a new key for the account (which exists from its first key on).

    Raises InvalidAccountId / InvalidLabel / InvalidScope / InvalidExpiry for bad input, StorageUnavailable.
    """
    for _ in range(_ISSUE_ATTEMPTS):
        issued = issue_key(account_id, clock(), label, scope=scope, expires_in=expires_in)
        try:
            keys.add(issued.key)
        except ApiKeyAlreadyExists:
            continue
        key = issued.key
        return CreatedKey(key.key_id, key.account_id, issued.plaintext, key.scope, key.expires_at)
    raise RuntimeError(f"{_ISSUE_ATTEMPTS} new key ids in a row were taken already")


def revoke_api_key(key_id: str, keys: ApiKeyRepository, clock: Clock = utc_now) -> ApiKey | None:
    """Revoke the key: from now on it authenticates nothing. Revoking again changes nothing; None if unknown."""
    return keys.revoke(key_id, clock())


def list_api_keys(account_id: str, keys: ApiKeyRepository) -> list[ApiKey]:
    """The account's keys, oldest first, revoked and expired ones too. Raises InvalidAccountId, StorageUnavailable."""
    return keys.list_for_account(validate_account_id(account_id))


def authenticate_key(plaintext: str | None, keys: ApiKeyRepository, clock: Clock = utc_now) -> AuthenticatedKey:
    """The key a request carries, checked; its use recorded (at most once a minute, best effort).

    Raises ApiKeyMissing (no key at all), ApiKeyInvalid (malformed, unknown,
    wrong, revoked or expired) or StorageUnavailable (cannot tell right now).
    """
    if not plaintext:
        raise ApiKeyMissing("no API key")
    # Malformed text never reaches storage: no read for garbage.
    stored = keys.get(key_id_of(plaintext))
    now = clock()
    account_id = verify(stored, plaintext, now)
    assert stored is not None  # verify() refuses a missing key
    _record_use(stored, keys, now)
    return AuthenticatedKey(stored.key_id, account_id, stored.scope)


def authenticate(plaintext: str | None, keys: ApiKeyRepository, clock: Clock = utc_now) -> str:
    """The account a request's key belongs to (see authenticate_key)."""
    return authenticate_key(plaintext, keys, clock).account_id


def usage_identifier(account_id: str, rate_limits: AccountRateLimitsRepository) -> str | None:
    """The value of the account's API Gateway API key, which names its usage plan; None if it has none (locally).

    Raises StorageUnavailable.
    """
    usage_key = rate_limits.get(account_id).usage_key
    return None if usage_key is None else usage_key.value


def _record_use(key: ApiKey, keys: ApiKeyRepository, now: datetime) -> None:
    # The stored key says when its use was last recorded: within the minute,
    # no write is even tried, so a busy key costs no write per request. Past
    # it, the conditional write lets one of the requests at once through.
    if not key.last_use_is_stale(now):
        return
    try:
        keys.record_use(key.key_id, now)
    except StorageUnavailable:
        # The key was checked already: failing to note its use must not refuse it.
        logger.warning("API key use not recorded", extra={"key_id": key.key_id}, exc_info=True)
