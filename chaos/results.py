"""What a chaos scenario reports: its findings and figures (`Result`), and the markdown table of a run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.checks import Tally


@dataclass
class Result:
    """What one scenario did and found; lost, duplicated, stuck and mismatched hold one line per finding."""

    scenario: str
    orders: int
    faults: str
    drain_s: float | None
    run_s: float
    outcome: str
    seed: int
    log_path: Path
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.stuck or self.mismatched)

    def add(self, tally: Tally) -> None:
        self.lost += tally.lost
        self.duplicated += tally.duplicated
        self.stuck += tally.stuck
        self.mismatched += tally.mismatched
        # The table has no column of its own for them: they count as mismatched, and say what they are.
        self.mismatched += [f"failed but live: {line}" for line in tally.failed_but_live]

    def problems(self) -> list[str]:
        return [
            *(f"lost: {line}" for line in self.lost),
            *(f"duplicated: {line}" for line in self.duplicated),
            *(f"stuck: {line}" for line in self.stuck),
            *(f"mismatched: {line}" for line in self.mismatched),
        ]


def status_counts(counter: Mapping[str, int]) -> str:
    """Final statuses, most frequent first: `placed 1,938, failed 62`."""
    return ", ".join(f"{status} {count:,}" for status, count in sorted(counter.items(), key=lambda kv: -kv[1]))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def markdown_table(results: Sequence[Result]) -> str:
    rows = [
        "| scenario | orders | faults injected | lost | duplicated | stuck | mismatched | time to drain | run time "
        "| final statuses |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows += [
        f"| {r.scenario} | {r.orders:,} | {r.faults} | {len(r.lost)} | {len(r.duplicated)} | {len(r.stuck)} "
        f"| {len(r.mismatched)} | {_duration(r.drain_s)} | {_duration(r.run_s)} | {r.outcome} |"
        for r in results
    ]
    return "\n".join(rows)
