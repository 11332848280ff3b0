"""Accounts and their API keys: issuing a key, recognising one, checking it against what is stored; no I/O.

A key has a scope (`trade`: everything the API offers; `read`: reading only),
an optional expiry (an expired key is refused exactly like a revoked one) and
the time it was last used, recorded at most once a minute.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

KEY_PREFIX = "bk"
# Base32's lowercase alphabet: readable in logs and commands, no 0/1/8/9 to confuse with letters.
KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
KEY_ID_LENGTH = 12  # 60 random bits: a collision is unlikely, and storing refuses one anyway
SECRET_BYTES = 32  # secrets.token_urlsafe(32): 43 URL-safe characters, 256 random bits
MAX_LABEL_LENGTH = 200

_ACCOUNT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_KEY_ID = re.compile(f"[{KEY_ID_ALPHABET}]{{{KEY_ID_LENGTH}}}")
# The secret is URL-safe base64 and may itself contain "_": split by position, not by "_".
_KEY = re.compile(f"{KEY_PREFIX}_(?P<key_id>[{KEY_ID_ALPHABET}]{{{KEY_ID_LENGTH}}})_(?P<secret>[A-Za-z0-9_-]{{43}})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Last use is for the operator ("is this key still used?"), not an audit log:
# a minute's resolution keeps it to one write a minute per key, however busy.
LAST_USE_RESOLUTION = timedelta(minutes=1)
# Long enough for any planned rotation, short enough that `now + lifetime` stays a valid date.
MAX_KEY_LIFETIME = timedelta(days=3660)


class KeyScope(StrEnum):
    """What a key may do: `read` only reads; `trade` also places and cancels orders."""

    READ = "read"
    TRADE = "trade"

    @property
    def may_write(self) -> bool:
        return self is KeyScope.TRADE


# Every key stored before scopes existed could trade: it still can.
DEFAULT_SCOPE = KeyScope.TRADE


class InvalidAccountId(ValueError):
    """Not an account id: 1-63 of a-z, 0-9 and '-', starting with a letter or digit."""


class InvalidLabel(ValueError):
    """A key's label is too long or holds control characters."""


class InvalidScope(ValueError):
    """Not a key scope: read or trade."""


class InvalidExpiry(ValueError):
    """A key's lifetime is not positive or is longer than MAX_KEY_LIFETIME."""


class AuthenticationFailed(Exception):
    """The request does not prove which account it acts for."""


class ApiKeyMissing(AuthenticationFailed):
    """The request carries no API key at all."""


class ApiKeyInvalid(AuthenticationFailed):
    """The request carries a key that is malformed, unknown, wrong, revoked or expired (callers are not told which)."""


def validate_account_id(account_id: str) -> str:
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise InvalidAccountId(
            f"{account_id!r} is not an account id: 1-63 characters of a-z, 0-9 and '-', not starting with '-'"
        )
    return account_id


def is_key_id(text: str) -> bool:
    return _KEY_ID.fullmatch(text) is not None


def validate_label(label: str | None) -> str | None:
    if label is None:
        return None
    if len(label) > MAX_LABEL_LENGTH or _CONTROL.search(label):
        raise InvalidLabel(f"a label has at most {MAX_LABEL_LENGTH} characters and no control characters")
    return label


def parse_scope(text: str) -> KeyScope:
    """The scope an operator named; InvalidScope otherwise."""
    try:
        return KeyScope(text)
    except ValueError:
        raise InvalidScope(f"{text!r} is not a key scope: {' or '.join(KeyScope)}") from None


def stored_scope(value: str | None) -> KeyScope:
    """The scope of a stored key: none stored (a key from before scopes) is trade; one this code does not know, read.

    An unknown value (written by a newer version, or by hand) grants the
    least there is rather than refusing the key or letting it trade.
    """
    if value is None:
        return DEFAULT_SCOPE
    try:
        return KeyScope(value)
    except ValueError:
        return KeyScope.READ


def hash_key(plaintext: str) -> str:
    """SHA-256 (hex) of the whole key, the only form ever stored.

    A fast hash is the right one here: the key holds 256 random bits, so no
    guessing or dictionary attack can get anywhere, and a slow password hash
    (bcrypt, scrypt) would cost tens of milliseconds on every API request.
    """
    return hashlib.sha256(plaintext.encode()).hexdigest()


def key_id_of(plaintext: str) -> str:
    """The key id inside a key; ApiKeyInvalid if the text does not have a key's shape."""
    match = _KEY.fullmatch(plaintext)
    if match is None:
        raise ApiKeyInvalid("not an API key")
    return match["key_id"]


@dataclass(frozen=True)
class ApiKey:
    """An account's key as stored: its id and the hash of the whole key, never the key itself."""

    key_id: str
    account_id: str
    secret_hash: str
    created_at: datetime
    label: str | None = None
    revoked_at: datetime | None = None
    scope: KeyScope = DEFAULT_SCOPE
    expires_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now: datetime) -> bool:
        """Expired from `expires_at` on (the instant itself included)."""
        return self.expires_at is not None and now >= self.expires_at

    def last_use_is_stale(self, now: datetime) -> bool:
        """Whether a use at `now` is worth recording: never recorded, or LAST_USE_RESOLUTION ago or more."""
        return self.last_used_at is None or now - self.last_used_at >= LAST_USE_RESOLUTION

    def matches(self, plaintext: str) -> bool:
        # Constant time: how long the comparison takes tells nothing about the stored hash.
        return hmac.compare_digest(hash_key(plaintext), self.secret_hash)

    def revoked(self, at: datetime) -> ApiKey:
        """Revoked at `at`; a key revoked already keeps its first revocation time."""
        return self if self.is_revoked else dataclasses.replace(self, revoked_at=at)


@dataclass(frozen=True)
class IssuedKey:
    """A new key: what is stored, and the plaintext, which exists only here and is shown once."""

    key: ApiKey
    plaintext: str


def issue_key(
    account_id: str,
    now: datetime,
    label: str | None = None,
    scope: KeyScope = DEFAULT_SCOPE,
    expires_in: timedelta | None = None,
) -> IssuedKey:
    """A new random key `bk_<key id>_<secret>` for the account, expiring `expires_in` after `now` if given.

    Raises InvalidAccountId, InvalidLabel, InvalidScope or InvalidExpiry.
    """
    validate_account_id(account_id)
    expires_at = now + validate_lifetime(expires_in) if expires_in is not None else None
    key_id = "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    plaintext = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
    key = ApiKey(
        key_id=key_id,
        account_id=account_id,
        secret_hash=hash_key(plaintext),
        created_at=now,
        label=validate_label(label),
        scope=parse_scope(scope),
        expires_at=expires_at,
    )
    return IssuedKey(key, plaintext)


def validate_lifetime(lifetime: timedelta) -> timedelta:
    if lifetime <= timedelta(0) or lifetime > MAX_KEY_LIFETIME:
        raise InvalidExpiry(f"a key's lifetime is more than 0 and at most {MAX_KEY_LIFETIME.days} days")
    return lifetime


def verify(stored: ApiKey | None, plaintext: str, now: datetime) -> str:
    """The account the key belongs to; ApiKeyInvalid unless it is the stored key, not revoked and not expired."""
    if stored is None or not stored.matches(plaintext):
        raise ApiKeyInvalid("unknown or wrong key")
    # The reasons below are for the log only: the caller gets one message for all.
    if stored.is_revoked:
        raise ApiKeyInvalid("revoked key")
    if stored.is_expired(now):
        raise ApiKeyInvalid("expired key")
    return stored.account_id
