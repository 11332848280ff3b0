"""Use cases of API keys: create one for an account, revoke one, and tell which account a request's key is for."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.adapters.api_keys import ApiKeyAlreadyExists, ApiKeyRepository
from chalicelib.clock import Clock, utc_now
from chalicelib.domain.accounts import ApiKey, ApiKeyMissing, issue_key, key_id_of, verify

# Key ids have 60 random bits, so a second collision in a row means something
# else is wrong (e.g. a broken random source), not bad luck.
_ISSUE_ATTEMPTS = 3


@dataclass(frozen=True)
class CreatedKey:
    key_id: str
    account_id: str
    plaintext: str  # the key itself: shown to the operator once, never stored


def create_api_key(account_id: str, label: str | None, keys: ApiKeyRepository, clock: Clock = utc_now) -> CreatedKey:
    """Issue and store a new key for the account (which exists from its first key on).

    Raises InvalidAccountId / InvalidLabel for bad input, StorageUnavailable.
    """
    for _ in range(_ISSUE_ATTEMPTS):
        issued = issue_key(account_id, clock(), label)
        try:
            keys.add(issued.key)
        except ApiKeyAlreadyExists:
            continue
        return CreatedKey(issued.key.key_id, issued.key.account_id, issued.plaintext)
    raise RuntimeError(f"{_ISSUE_ATTEMPTS} new key ids in a row were taken already")


def revoke_api_key(key_id: str, keys: ApiKeyRepository, clock: Clock = utc_now) -> ApiKey | None:
    """Revoke the key: from now on it authenticates nothing. Revoking again changes nothing; None if unknown."""
    return keys.revoke(key_id, clock())


def authenticate(plaintext: str | None, keys: ApiKeyRepository) -> str:
    """The account a request's key belongs to.

    Raises ApiKeyMissing (no key at all), ApiKeyInvalid (malformed, unknown,
    wrong or revoked) or StorageUnavailable (cannot tell right now).
    """
    if not plaintext:
        raise ApiKeyMissing("no API key")
    # Malformed text never reaches storage: no read for garbage.
    return verify(keys.get(key_id_of(plaintext)), plaintext)
