"""The API keys' use cases against an in-memory store: create, revoke, list, authenticate and record use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.accounts import ApiKeyInvalid, ApiKeyMissing, InvalidAccountId, KeyScope, hash_key, issue_key
from chalicelib.service.accounts import (
    authenticate,
    authenticate_key,
    create_api_key,
    list_api_keys,
    revoke_api_key,
)
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


def test_create_stores_scope_and_expiry() -> None:
    keys = FakeApiKeyRepository()
    created = create_api_key("acme", None, keys, clock=lambda: T0, scope=KeyScope.READ, expires_in=timedelta(hours=12))
    assert (created.scope, created.expires_at) == (KeyScope.READ, T0 + timedelta(hours=12))
    stored = keys.keys[created.key_id]
    assert (stored.scope, stored.expires_at) == (KeyScope.READ, T0 + timedelta(hours=12))
    default = create_api_key("acme", None, keys, clock=lambda: T0)
    assert (default.scope, default.expires_at) == (KeyScope.TRADE, None)


def test_authenticate_key_names_the_account_and_scope_and_refuses_an_expired_key() -> None:
    keys = FakeApiKeyRepository()
    created = create_api_key("acme", None, keys, clock=lambda: T0, scope=KeyScope.READ, expires_in=timedelta(days=1))
    authenticated = authenticate_key(created.plaintext, keys, clock=lambda: T0 + timedelta(hours=23))
    assert (authenticated.key_id, authenticated.account_id, authenticated.scope) == (
        created.key_id,
        "acme",
        KeyScope.READ,
    )
    with pytest.raises(ApiKeyInvalid):
        authenticate_key(created.plaintext, keys, clock=lambda: T0 + timedelta(days=1))


def test_a_use_is_recorded_at_most_once_a_minute_without_a_write_per_request() -> None:
    keys = FakeApiKeyRepository()
    created = create_api_key("acme", None, keys, clock=lambda: T0)
    for second in range(0, 120, 5):  # 24 requests over two minutes
        now = T0 + timedelta(seconds=second)
        authenticate_key(created.plaintext, keys, clock=lambda: now)  # noqa: B023 - called within the iteration
    # Recorded at 0 s and 60 s; the other 22 requests tried no write at all.
    assert keys.keys[created.key_id].last_used_at == T0 + timedelta(seconds=60)
    assert keys.use_writes == 2


def test_a_refused_key_records_no_use() -> None:
    keys = FakeApiKeyRepository()
    created = create_api_key("acme", None, keys, clock=lambda: T0)
    revoke_api_key(created.key_id, keys, clock=lambda: T0)
    with pytest.raises(ApiKeyInvalid):
        authenticate_key(created.plaintext, keys, clock=lambda: T0)
    assert keys.use_writes == 0 and keys.keys[created.key_id].last_used_at is None


def test_failing_to_record_a_use_does_not_refuse_the_key(caplog: pytest.LogCaptureFixture) -> None:
    keys = FakeApiKeyRepository()
    created = create_api_key("acme", None, keys, clock=lambda: T0)
    keys.record_use_down = True
    with caplog.at_level("WARNING"):
        assert authenticate_key(created.plaintext, keys, clock=lambda: T0).account_id == "acme"
    assert "API key use not recorded" in caplog.text
    assert keys.keys[created.key_id].last_used_at is None


def test_list_gives_the_accounts_keys_oldest_first_and_checks_the_account_id() -> None:
    keys = FakeApiKeyRepository()
    second = create_api_key("acme", "b", keys, clock=lambda: T0 + timedelta(hours=1))
    first = create_api_key("acme", "a", keys, clock=lambda: T0)
    create_api_key("other", None, keys, clock=lambda: T0)
    revoke_api_key(first.key_id, keys)
    listed = list_api_keys("acme", keys)
    assert [key.key_id for key in listed] == [first.key_id, second.key_id]
    assert listed[0].is_revoked
    with pytest.raises(InvalidAccountId):
        list_api_keys("Not An Account", keys)
