"""CPU seconds of each of the stack's processes over a measured window, and the emulator's calls per order.

A window samples /proc at its start and its end: user + system CPU of every
process below this one, grouped by the stack process it descends from (moto,
api with its gunicorn workers, runner, exchange, bridge) and "bench" (this
process, the children it has reaped inside the window, e.g. the create floor's
workers, and any other helper). A process that exits inside a window loses
its CPU from the figure; the windows are chosen so that none of the stack's does.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.idle_polling import action_of
from devstack.processes import parent_pids

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")
BENCH = "bench"
MOTO = "moto"
GROUPS = (MOTO, "api", "runner", "exchange", "bridge", BENCH)


def stat_cpu_seconds(pid: int, proc: Path = PROC, with_reaped_children: bool = False) -> float | None:
    """utime + stime of pid (its threads included), plus cutime + cstime if asked; None if it is gone."""
    try:
        fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: children this process has waited for
    return ticks / CLOCK_TICKS


# Our server around moto's (devstack/moto_server.py), or moto's own.
MOTO_MODULES = (b"devstack.moto_server", b"moto.server")


def is_moto(pid: int, proc: Path = PROC) -> bool:
    try:
        return any(name in (proc / str(pid) / "cmdline").read_bytes() for name in MOTO_MODULES)
    except OSError:
        return False


def group_of(pid: int, parents: Mapping[int, int], roots: Mapping[int, str], top: int, proc: Path) -> str:
    """The group of a descendant of top: the first named root on its way up, moto by its command, else bench."""
    seen = pid
    while seen in parents and seen != top:
        if seen in roots:
            return roots[seen]
        if is_moto(seen, proc):
            return MOTO
        seen = parents[seen]
    return BENCH


# pid -> (group, CPU seconds so far)
Sample = dict[int, tuple[str, float]]


def sample(roots: Mapping[int, str], proc: Path = PROC, top: int | None = None) -> Sample:
    """CPU seconds of top (default: this process) and of every process below it, each with its group."""
    top = os.getpid() if top is None else top
    parents = parent_pids(proc)
    children: dict[int, list[int]] = collections.defaultdict(list)
    for child, parent in parents.items():
        children[parent].append(child)
    found: Sample = {}
    own = stat_cpu_seconds(top, proc, with_reaped_children=True)
    if own is not None:
        found[top] = (BENCH, own)
    frontier = list(children.get(top, []))
    while frontier:
        pid = frontier.pop()
        cpu = stat_cpu_seconds(pid, proc)
        if cpu is not None:
            found[pid] = (group_of(pid, parents, roots, top, proc), cpu)
        frontier += children.get(pid, [])
    return found


def cpu_between(before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds each group spent between two samples: processes born in between count from zero."""
    spent: dict[str, float] = collections.defaultdict(float)
    for pid, (group, cpu) in after.items():
        spent[group] += cpu - before.get(pid, (group, 0.0))[1]
    return dict(spent)


@dataclass
class CpuWindow:
    """CPU seconds per group over one measured window, and the orders it handled."""

    label: str
    orders: int = 0
    seconds: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)

    def percent(self, group: str) -> float:
        return 100 * self.cpu_s.get(group, 0.0) / self.seconds if self.seconds else float("nan")

    def ms_per_order(self, group: str) -> float:
        return 1000 * self.cpu_s.get(group, 0.0) / self.orders if self.orders else float("nan")


class CpuProfiler:
    """Windows of CPU per group; roots() names the stack's processes by pid at each sample (they may be replaced)."""

    def __init__(self, roots: Callable[[], Mapping[int, str]], proc: Path = PROC, top: int | None = None) -> None:
        self._roots = roots
        self._proc = proc
        self._top = top  # the process whose descendants are sampled: this one unless told
        self.windows: list[CpuWindow] = []
        self._open: tuple[CpuWindow, Sample, float, Mapping[int, str]] | None = None

    def start(self, label: str, extra_roots: Mapping[int, str] | None = None) -> None:
        """Open a window; extra_roots names processes outside the stack's list (a create level's own API)."""
        extra = dict(extra_roots or {})
        self._open = (
            CpuWindow(label),
            sample({**self._roots(), **extra}, self._proc, self._top),
            time.monotonic(),
            extra,
        )

    def stop(self, orders: int) -> CpuWindow:
        if self._open is None:
            raise RuntimeError("no window started")
        window, before, started, extra = self._open
        window.cpu_s = cpu_between(before, sample({**self._roots(), **extra}, self._proc, self._top))
        window.seconds = time.monotonic() - started
        window.orders = orders
        self.windows.append(window)
        self._open = None
        return window


def cpu_table(windows: list[CpuWindow]) -> list[str]:
    """Markdown: per window and group, CPU % of one core and CPU ms per order."""
    header = "| window | orders | s | " + " | ".join(GROUPS) + " | total |"
    lines = [header, "|" + "---|" * (len(GROUPS) + 4)]
    for window in windows:
        cells = [f"{window.percent(g):.0f}% · {window.ms_per_order(g):.1f}" for g in GROUPS]
        total = sum(window.cpu_s.values())
        cells.append(
            f"{100 * total / window.seconds:.0f}% · {1000 * total / window.orders:.1f}" if window.orders else "-"
        )
        lines.append(f"| {window.label} | {window.orders} | {window.seconds:.1f} | " + " | ".join(cells) + " |")
    return lines


class EmulatorRecorder:
    """moto's request recorder, switched on only around a window (it appends every request to a file)."""

    def __init__(self, endpoint_url: str, recording: Path) -> None:
        self._endpoint = endpoint_url
        self.recording = recording

    def _call(self, action: str) -> None:
        requests.post(f"{self._endpoint}/moto-api/recorder/{action}", timeout=10).raise_for_status()

    def start(self) -> None:
        self._call("reset-recording")
        self._call("start-recording")

    def stop(self) -> collections.Counter[str]:
        """Stop recording; the requests made since start, by service action."""
        self._call("stop-recording")
        return recorded_actions(self.recording.read_text(errors="replace") if self.recording.exists() else "")


ENTRY_START = '{"headers"'


def recorded_actions(text: str) -> collections.Counter[str]:
    """Requests by action in moto's recording, whose threads may interleave their entries (one write each,
    then the newline apart): entries are decoded back to back; one cut by another is counted as "unreadable".
    """
    decoder = json.JSONDecoder()
    counts: collections.Counter[str] = collections.Counter()
    at = text.find(ENTRY_START)
    while at != -1:
        try:
            entry, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            counts["unreadable"] += 1
            at = text.find(ENTRY_START, at + 1)
            continue
        counts[action_of(entry)] += 1
        at = text.find(ENTRY_START, end)
    return counts


def calls_lines(calls: collections.Counter[str], orders: int) -> list[str]:
    """Markdown: emulator requests per placed order, by action, most first."""
    total = sum(calls.values())
    lines = ["| action | requests | per placed order |", "|---|---|---|"]
    lines += [f"| {action} | {n} | {n / orders:.2f} |" for action, n in calls.most_common()]
    lines.append(f"| total | {total} | {total / orders:.2f} |" if orders else f"| total | {total} | - |")
    return lines
