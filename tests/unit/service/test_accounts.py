"""The API keys' use cases against an in-memory store: create, revoke, authenticate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.accounts import ApiKeyInvalid, ApiKeyMissing, hash_key, issue_key
from chalicelib.service.accounts import authenticate, create_api_key, revoke_api_key
from tests.unit.fakes import FakeApiKeyRepository

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


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
