"""argparse types the tool's subcommands share: an account id and a whole number, refused with what is wrong."""

from __future__ import annotations

import argparse

from chalicelib.domain.accounts import InvalidAccountId, validate_account_id

ACCOUNT_HELP = "account id: 1-63 of a-z, 0-9, '-'"


def account_id(text: str) -> str:
    """An account id as the API stores it (chalicelib.domain.accounts), else argparse's usage error."""
    try:
        return validate_account_id(text)
    except InvalidAccountId as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def whole_number(text: str) -> int:
    """A whole number, `_` allowed between digits (10_000); the bounds are the caller's to check."""
    try:
        return int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
