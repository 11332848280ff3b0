"""API keys in the domain: their format, hashing and verifying; scopes, expiry and when a use is worth recording."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.accounts import (
    LAST_USE_RESOLUTION,
    MAX_KEY_LIFETIME,
    ApiKeyInvalid,
    InvalidAccountId,
    InvalidExpiry,
    InvalidLabel,
    InvalidScope,
    KeyScope,
    hash_key,
    is_key_id,
    issue_key,
    key_id_of,
    parse_scope,
    stored_scope,
    validate_account_id,
    verify,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
KEY_SHAPE = re.compile(r"bk_[a-z2-7]{12}_[A-Za-z0-9_-]{43}")


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
    assert verify(issued.key, issued.plaintext, T0) == "acme"
    other = issue_key("acme", T0)
    for wrong in (other.plaintext, issued.plaintext[:-1] + ("A" if issued.plaintext[-1] != "A" else "B")):
        with pytest.raises(ApiKeyInvalid):
            verify(issued.key, wrong, T0)
    with pytest.raises(ApiKeyInvalid):
        verify(None, issued.plaintext, T0)


def test_a_revoked_key_verifies_no_more_and_keeps_its_first_revocation_time() -> None:
    issued = issue_key("acme", T0)
    revoked = issued.key.revoked(T0 + timedelta(hours=1))
    assert revoked.revoked(T0 + timedelta(hours=2)).revoked_at == T0 + timedelta(hours=1)
    with pytest.raises(ApiKeyInvalid):
        verify(revoked, issued.plaintext, T0)


def test_the_stored_hash_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import chalicelib.domain.accounts as accounts

    compared: list[tuple[str, str]] = []
    monkeypatch.setattr(accounts.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or a == b)
    issued = issue_key("acme", T0)
    assert verify(issued.key, issued.plaintext, T0) == "acme"
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


# --- Scopes ---


def test_a_key_trades_unless_issued_read_only() -> None:
    assert issue_key("acme", T0).key.scope is KeyScope.TRADE
    read = issue_key("acme", T0, scope=KeyScope.READ).key
    assert read.scope is KeyScope.READ
    assert not read.scope.may_write and KeyScope.TRADE.may_write


def test_a_key_stored_before_scopes_trades_and_an_unknown_stored_scope_only_reads() -> None:
    assert stored_scope(None) is KeyScope.TRADE
    assert stored_scope("read") is KeyScope.READ and stored_scope("trade") is KeyScope.TRADE
    for unknown in ("admin", "", "TRADE", "trade "):
        assert stored_scope(unknown) is KeyScope.READ


@pytest.mark.parametrize("text", ["", "admin", "Read", "trade,read", "write"])
def test_an_operator_names_a_scope_exactly(text: str) -> None:
    with pytest.raises(InvalidScope):
        parse_scope(text)
    with pytest.raises(InvalidScope):
        issue_key("acme", T0, scope=text)  # type: ignore[arg-type]


def test_a_read_key_verifies_like_any_other() -> None:
    issued = issue_key("acme", T0, scope=KeyScope.READ)
    assert verify(issued.key, issued.plaintext, T0) == "acme"


# --- Expiry ---


def test_a_key_without_a_lifetime_never_expires() -> None:
    issued = issue_key("acme", T0)
    assert issued.key.expires_at is None
    assert verify(issued.key, issued.plaintext, T0 + timedelta(days=100 * 365)) == "acme"


def test_an_expired_key_is_refused_like_a_revoked_one_from_its_expiry_on() -> None:
    issued = issue_key("acme", T0, expires_in=timedelta(days=30))
    expiry = T0 + timedelta(days=30)
    assert issued.key.expires_at == expiry
    assert verify(issued.key, issued.plaintext, expiry - timedelta(microseconds=1)) == "acme"
    for now in (expiry, expiry + timedelta(days=1)):
        with pytest.raises(ApiKeyInvalid):
            verify(issued.key, issued.plaintext, now)
    # The same exception as a revoked or an unknown key: the caller cannot tell them apart.
    revoked = issued.key.revoked(T0)
    with pytest.raises(ApiKeyInvalid):
        verify(revoked, issued.plaintext, T0)


def test_a_wrong_secret_is_refused_before_expiry_or_revocation_are_looked_at() -> None:
    issued = issue_key("acme", T0, expires_in=timedelta(hours=1))
    other = issue_key("acme", T0)
    with pytest.raises(ApiKeyInvalid, match="unknown or wrong"):
        verify(issued.key, other.plaintext, T0 + timedelta(days=1))


@pytest.mark.parametrize(
    "lifetime", [timedelta(0), timedelta(seconds=-1), MAX_KEY_LIFETIME + timedelta(seconds=1), timedelta.max]
)
def test_a_lifetime_is_positive_and_bounded(lifetime: timedelta) -> None:
    with pytest.raises(InvalidExpiry):
        issue_key("acme", T0, expires_in=lifetime)
    assert issue_key("acme", T0, expires_in=MAX_KEY_LIFETIME).key.expires_at == T0 + MAX_KEY_LIFETIME


# --- Last use ---


def test_a_use_is_worth_recording_if_never_recorded_or_a_minute_old() -> None:
    key = issue_key("acme", T0).key
    assert key.last_used_at is None and key.last_use_is_stale(T0)
    used = dataclasses.replace(key, last_used_at=T0)
    assert not used.last_use_is_stale(T0)
    assert not used.last_use_is_stale(T0 + LAST_USE_RESOLUTION - timedelta(microseconds=1))
    assert used.last_use_is_stale(T0 + LAST_USE_RESOLUTION)
    assert timedelta(minutes=1) == LAST_USE_RESOLUTION
