"""`python -m ops keys`: reading --expires-in and --scope; labels shown escaped."""

from __future__ import annotations

import argparse
import io
from datetime import timedelta

import pytest

from chalicelib.domain.accounts import KeyScope
from ops import keys
from ops.cli import build_parser

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"), [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("1h", timedelta(hours=1))]
)
def test_durations_are_days_or_hours(text: str, expected: timedelta) -> None:
    assert keys.duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "30m", "1.5d", "-1d", "0d", "0h", "3661d", "99999d", "30 d", "1w"])
def test_other_durations_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        keys.duration(text)


def test_the_parser_defaults_to_a_trade_key_that_never_expires() -> None:
    parsed = build_parser().parse_args(["keys", "create", "--account", "acme"])
    assert (parsed.scope, parsed.expires_in) == (KeyScope.TRADE, None)
    parsed = build_parser().parse_args(["keys", "create", "--account", "acme", "--scope", "read", "--expires-in", "2d"])
    assert (parsed.scope, parsed.expires_in) == (KeyScope.READ, timedelta(days=2))
    assert build_parser().parse_args(["keys", "list", "--account", "acme"]).keys_command == "list"


@pytest.mark.parametrize("args", [["--scope", "admin"], ["--expires-in", "forever"], ["--expires-in", "0d"]])
def test_the_parser_refuses_a_bad_scope_or_duration(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["keys", "create", "--account", "acme", *args])
    assert exited.value.code == 2


def test_shown_escapes_every_non_printable_character_and_keeps_the_rest() -> None:
    assert keys.shown("acme's bot é") == "acme's bot é"
    assert keys.shown("a\u202eb") == "a\\u202eb"  # right-to-left override
    assert keys.shown("a\nb\x1b[2J") == "a\\nb\\u001b[2J"
    assert keys.shown("zero\u200bwidth") == "zero\\u200bwidth"


def test_the_list_shows_scope_expiry_and_last_use_and_escapes_labels() -> None:
    view = {
        "target": "stage local",
        "action": "listed",
        "account_id": "acme",
        "keys": [
            {
                "key_id": "q2m7xk4tzp3a",
                "label": "desk \u202eevil",
                "scope": "read",
                "state": "revoked",
                "created_at": "2026-11-23T22:04:01.123456+00:00",
                "expires_at": "2026-12-23T22:04:01.123456+00:00",
                "last_used_at": None,
                "revoked_at": "2026-11-24T10:00:00+00:00",
            }
        ],
    }
    out = io.StringIO()
    keys.render(view, out)
    text = out.getvalue()
    assert "\u202e" not in text and "desk \\u202eevil" in text
    row = text.splitlines()[2].split()
    assert row == ["q2m7xk4tzp3a", "read", "revoked", "2026-11-23", "22:04:01Z", "2026-12-23", "22:04:01Z", "never"]
    assert "revoked 2026-11-24 10:00:00Z" in text


def test_a_created_key_shows_its_scope_and_expiry() -> None:
    view = {
        "target": "stage local",
        "action": "created",
        "account_id": "acme",
        "key_id": "q2m7xk4tzp3a",
        "label": "line\nbreak",
        "scope": "read",
        "expires_at": "2026-12-23T22:04:01+00:00",
        "api_key": "bk_q2m7xk4tzp3a_" + "x" * 43,
    }
    out = io.StringIO()
    keys.render(view, out)
    text = out.getvalue()
    assert "scope read, expires 2026-12-23 22:04:01Z" in text
    assert "(line\\nbreak)" in text and "line\nbreak" not in text
