"""API keys: the pure rules (format, hashing, verifying) and the service's use cases with an in-memory store."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.adapters.api_keys import ApiKeyAlreadyExists
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.accounts import (
    ApiKey,
    ApiKeyInvalid,
    ApiKeyMissing,
    InvalidAccountId,
    InvalidLabel,
    hash_key,
    is_key_id,
    issue_key,
    key_id_of,
    validate_account_id,
    verify,
)
from chalicelib.service.accounts import authenticate, create_api_key, revoke_api_key

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
KEY_SHAPE = re.compile(r"bk_[a-z2-7]{12}_[A-Za-z0-9_-]{43}")


class FakeApiKeyRepository:
    """In memory, with the repository's contract: conditional add, revoke keeps the first time."""

    def __init__(self) -> None:
        self.keys: dict[str, ApiKey] = {}
        self.down = False
        self.reads = 0
        self.taken: set[str] = set()  # key ids add() refuses, as if stored already

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailable("down")

    def add(self, key: ApiKey) -> None:
        self._check()
        if key.key_id in self.keys or key.key_id in self.taken:
            raise ApiKeyAlreadyExists(key.key_id)
        self.keys[key.key_id] = key

    def get(self, key_id: str) -> ApiKey | None:
        self._check()
        self.reads += 1
        return self.keys.get(key_id)

    def revoke(self, key_id: str, at: datetime) -> ApiKey | None:
        self._check()
        if key_id not in self.keys:
            return None
        self.keys[key_id] = self.keys[key_id].revoked(at)
        return self.keys[key_id]


# --- The domain ---


def test_an_issued_key_has_the_documented_shape_and_only_its_hash_is_kept() -> None:
    issued = issue_key("acme-1", T0, label="ci")
    assert KEY_SHAPE.fullmatch(issued.plaintext)
    assert issued.plaintext.startswith(f"bk_{issued.key.key_id}_")
    stored = dataclasses.asdict(issued.key)
    assert issued.plaintext not in {str(value) for value in stored.values()}
    secret = issued.plaintext.split("_", 2)[2]
    assert not any(secret in str(value) for value in stored.values())
    assert issued.key.secret_hash == hashlib.sha256(issued.plaintext.encode()).hexdigest()
    assert (issued.key.account_id, issued.key.created_at, issued.key.label) == ("acme-1", T0, "ci")
    assert issued.key.revoked_at is None


def test_keys_are_random() -> None:
    keys = [issue_key("acme", T0) for _ in range(50)]
    assert len({k.plaintext for k in keys}) == len({k.key.key_id for k in keys}) == 50


def test_a_key_verifies_for_its_account_and_nothing_else_does() -> None:
    issued = issue_key("acme", T0)
    assert verify(issued.key, issued.plaintext) == "acme"
    other = issue_key("acme", T0)
    for wrong in (other.plaintext, issued.plaintext[:-1] + ("A" if issued.plaintext[-1] != "A" else "B")):
        with pytest.raises(ApiKeyInvalid):
            verify(issued.key, wrong)
    with pytest.raises(ApiKeyInvalid):
        verify(None, issued.plaintext)


def test_a_revoked_key_verifies_no_more_and_keeps_its_first_revocation_time() -> None:
    issued = issue_key("acme", T0)
    revoked = issued.key.revoked(T0 + timedelta(hours=1))
    assert revoked.revoked(T0 + timedelta(hours=2)).revoked_at == T0 + timedelta(hours=1)
    with pytest.raises(ApiKeyInvalid):
        verify(revoked, issued.plaintext)


def test_the_stored_hash_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import chalicelib.domain.accounts as accounts

    compared: list[tuple[str, str]] = []
    monkeypatch.setattr(accounts.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or a == b)
    issued = issue_key("acme", T0)
    assert verify(issued.key, issued.plaintext) == "acme"
    assert compared == [(hash_key(issued.plaintext), issued.key.secret_hash)]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "bk_",
        "bearer",
        "bk_abcdefghijkl",
        "bk_abcdefghijkl_short",
        "bk_ABCDEFGHIJKL_" + "a" * 43,  # key ids are lowercase
        "bk_abcdefghijk1_" + "a" * 43,  # 1 is not in base32's alphabet
        "xx_abcdefghijkl_" + "a" * 43,
        "bk_abcdefghijkl_" + "a" * 44,
        "bk_abcdefghijkl_" + "a" * 42 + "=",
        " bk_abcdefghijkl_" + "a" * 43,
        "bk_abcdefghijkl_" + "a" * 42 + "\n",
        "bk_abcdefghijkl_" + "\u00e9" * 43,
    ],
)
def test_text_without_a_keys_shape_is_invalid(text: str) -> None:
    with pytest.raises(ApiKeyInvalid):
        key_id_of(text)


def test_the_key_id_is_read_by_position_since_the_secret_may_hold_underscores() -> None:
    assert key_id_of("bk_abcdefghijkl_" + "_" * 43) == "abcdefghijkl"
    assert is_key_id("abcdefghijkl") and not is_key_id("abcdefghijk") and not is_key_id("bk_abcdefghijkl")


@pytest.mark.parametrize("account_id", ["a", "demo", "acme-1", "0", "a" * 63, "x-" * 31 + "x"])
def test_valid_account_ids(account_id: str) -> None:
    assert validate_account_id(account_id) == account_id


@pytest.mark.parametrize("account_id", ["", "-a", "Acme", "a_b", "a b", "a" * 64, "ä", "a\n", "a/b"])
def test_invalid_account_ids(account_id: str) -> None:
    with pytest.raises(InvalidAccountId):
        validate_account_id(account_id)
    with pytest.raises(InvalidAccountId):
        issue_key(account_id, T0)


@pytest.mark.parametrize("label", ["x" * 201, "tab\there", "new\nline", "\x7f"])
def test_labels_are_short_and_printable(label: str) -> None:
    with pytest.raises(InvalidLabel):
        issue_key("acme", T0, label=label)


# --- The service ---


def test_create_stores_the_key_and_returns_the_plaintext_once() -> None:
    keys = FakeApiKeyRepository()
    created = create_api_key("acme", "laptop", keys, clock=lambda: T0)
    stored = keys.keys[created.key_id]
    assert (stored.account_id, stored.label, stored.created_at) == ("acme", "laptop", T0)
    assert stored.secret_hash == hash_key(created.plaintext)
    assert created.plaintext not in repr(stored)
    assert authenticate(created.plaintext, keys) == "acme"


def test_create_draws_another_key_id_when_one_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    import chalicelib.domain.accounts as accounts

    ids = iter("aaaaaaaaaaaa" + "bbbbbbbbbbbb")
    monkeypatch.setattr(accounts.secrets, "choice", lambda _: next(ids))
    keys = FakeApiKeyRepository()
    keys.taken.add("aaaaaaaaaaaa")
    created = create_api_key("acme", None, keys)
    assert created.key_id == "bbbbbbbbbbbb"


def test_authenticate_tells_a_missing_key_from_an_invalid_one() -> None:
    keys = FakeApiKeyRepository()
    created = create_api_key("acme", None, keys)
    for missing in (None, ""):
        with pytest.raises(ApiKeyMissing):
            authenticate(missing, keys)
    unknown = issue_key("acme", T0).plaintext
    wrong_secret = f"bk_{created.key_id}_" + "A" * 43
    for invalid in ("garbage", unknown, wrong_secret):
        with pytest.raises(ApiKeyInvalid):
            authenticate(invalid, keys)


def test_malformed_keys_are_refused_without_a_read() -> None:
    keys = FakeApiKeyRepository()
    with pytest.raises(ApiKeyInvalid):
        authenticate("x" * 10_000, keys)
    assert keys.reads == 0


def test_revoking_stops_the_key_at_once_and_is_idempotent() -> None:
    keys = FakeApiKeyRepository()
    created = create_api_key("acme", None, keys)
    other = create_api_key("acme", None, keys)
    first = revoke_api_key(created.key_id, keys, clock=lambda: T0)
    again = revoke_api_key(created.key_id, keys, clock=lambda: T0 + timedelta(days=1))
    assert first is not None and again is not None
    assert first.revoked_at == again.revoked_at == T0
    with pytest.raises(ApiKeyInvalid):
        authenticate(created.plaintext, keys)
    # The account's other keys go on working.
    assert authenticate(other.plaintext, keys) == "acme"
    assert revoke_api_key("zzzzzzzzzzzz", keys) is None


def test_storage_down_is_neither_missing_nor_invalid() -> None:
    keys = FakeApiKeyRepository()
    created = create_api_key("acme", None, keys)
    keys.down = True
    with pytest.raises(StorageUnavailable):
        authenticate(created.plaintext, keys)
