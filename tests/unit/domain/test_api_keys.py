"""API keys in the domain: their format, hashing and verifying."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.accounts import (
    ApiKeyInvalid,
    InvalidAccountId,
    InvalidLabel,
    hash_key,
    is_key_id,
    issue_key,
    key_id_of,
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
