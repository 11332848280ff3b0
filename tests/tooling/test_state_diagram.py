"""docs/architecture.md's order life cycle diagram is the transition table's, generated (devstack/state_diagram.py)."""

from __future__ import annotations

import pytest

from chalicelib.domain.model import TRANSITIONS, OrderStatus
from devstack.state_diagram import ARCHITECTURE_DOC, BEGIN, END, state_diagram, with_diagram

pytestmark = pytest.mark.unit


def test_the_documented_diagram_is_the_one_the_transition_table_gives() -> None:
    document = ARCHITECTURE_DOC.read_text(encoding="utf-8")
    assert with_diagram(document, state_diagram()) == document, (
        "docs/architecture.md's state diagram differs from TRANSITIONS: "
        "run .venv/bin/python -m devstack.state_diagram --write"
    )


def test_the_diagram_has_every_transition_and_only_those() -> None:
    lines = set(state_diagram().splitlines())
    automatic = {(source.value, target.value) for source, targets in TRANSITIONS.items() for target in targets}
    drawn = {
        tuple(line.strip().split(" --> "))
        for line in lines
        if " --> " in line and "[*]" not in line and ":" not in line
    }
    assert drawn == automatic
    assert f"    [*] --> {OrderStatus.PENDING.value}" in lines
    assert "    failed --> pending: operator redrive" in lines
    assert {line for line in lines if line.endswith("--> [*]")} == {
        f"    {status.value} --> [*]" for status, targets in TRANSITIONS.items() if not targets
    }


def test_a_changed_table_changes_the_diagram() -> None:
    fewer = {**TRANSITIONS, OrderStatus.PLACED: TRANSITIONS[OrderStatus.PLACED] - {OrderStatus.EXPIRED}}
    assert "placed --> expired" in state_diagram()
    assert "placed --> expired" not in state_diagram(fewer)


def test_a_document_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="markers"):
        with_diagram("# no diagram here", state_diagram())
    assert BEGIN in with_diagram(f"a\n{BEGIN}\nold\n{END}\nb", "new")
