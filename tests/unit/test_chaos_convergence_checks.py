"""The lost-answers scenario's order-by-order check (chaos/checks.py): each kind of disagreement is found."""

from __future__ import annotations

from typing import Any

import pytest

from chaos.checks import check_convergence

pytestmark = pytest.mark.unit


def record(accepted: int = 1, status: str = "filled", cum_qty: int = 10, avg: str | None = "9.5") -> dict[str, Any]:
    execution = {"status": status, "cum_qty": cum_qty, "avg_price": avg, "done": status != "new"}
    return {"accepted": accepted, "failures": 0, "execution": execution}


def ours(status: str = "filled", filled: int = 10, avg: float | None = 9.5) -> dict[str, Any]:
    return {"status": status, "filled_quantity": filled, "average_fill_price": avg}


def kinds(found: dict[str, list[str]]) -> set[str]:
    return {kind for kind, lines in found.items() if lines}


def test_an_order_that_agrees_with_the_exchange_is_clean() -> None:
    assert kinds(check_convergence("o", ours(), record())) == set()


def test_a_fill_short_of_the_exchanges_is_a_mismatch() -> None:
    assert kinds(check_convergence("o", ours(filled=4), record())) == {"mismatched"}


def test_failed_here_while_the_exchange_filled_it_is_failed_but_live() -> None:
    assert kinds(check_convergence("o", ours("failed", 0, None), record())) == {"failed_but_live"}


def test_failed_here_and_rejected_there_with_nothing_filled_agree() -> None:
    rejected = record(status="rejected", cum_qty=0, avg=None)
    assert kinds(check_convergence("o", ours("failed", 0, None), rejected)) == set()


def test_never_accepted_must_be_failed_or_rejected_here() -> None:
    assert kinds(check_convergence("o", ours("failed", 0, None), None)) == set()
    assert kinds(check_convergence("o", ours("placed", 0, None), None)) == {"lost"}


def test_two_acceptances_are_a_double_placement_and_a_missing_order_is_lost() -> None:
    assert "duplicated" in kinds(check_convergence("o", ours(), record(accepted=2)))
    assert kinds(check_convergence("o", None, record())) == {"lost"}


def test_an_order_the_exchange_still_works_is_stuck() -> None:
    assert kinds(check_convergence("o", ours("placed", 0, None), record(status="new", cum_qty=0, avg=None))) == {
        "stuck"
    }
