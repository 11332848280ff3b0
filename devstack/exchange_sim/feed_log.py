"""The feed log: every execution report emitted in this process, in seq order, and the from_seq that reads it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from devstack.exchange_sim.config import InvalidValue


@dataclass(frozen=True)
class FeedEntry:
    seq: int
    report: dict[str, Any]
    text: str
    # Drawn once when the report is logged, so every live client sees the same misbehaviour.
    duplicate: bool
    reorder: bool


class FeedLog:
    """Append-only and never cleared, so seq stays gap-free for the life of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[FeedEntry] = []
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call listener (from the appending thread; it must not block) after each append."""
        with self._lock:
            self._listeners.append(listener)

    def append(self, report: Mapping[str, Any], duplicate: bool = False, reorder: bool = False) -> dict[str, Any]:
        with self._lock:
            seq = len(self._entries) + 1
            logged = {"seq": seq, **report}
            self._entries.append(FeedEntry(seq, logged, json.dumps(logged), duplicate, reorder))
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return logged

    @property
    def last_seq(self) -> int:
        with self._lock:
            return len(self._entries)

    def since(self, from_seq: int) -> list[FeedEntry]:
        """The entries with seq >= from_seq, in order; seq n is at index n - 1."""
        with self._lock:
            return self._entries[max(from_seq, 1) - 1 :]


def parse_from_seq(query: str) -> int:
    """from_seq in a query string (default 1); InvalidValue for anything else in it."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidValue(f"malformed query string: {query!r}") from None
    # A misspelt parameter silently meaning "replay from 1" would hide the mistake.
    unknown = sorted({key for key, _ in pairs} - {"from_seq"})
    if unknown:
        raise InvalidValue(f"unknown query parameter(s): {', '.join(unknown)} (allowed: from_seq)")
    values = [value for _, value in pairs]
    if not values:
        return 1
    if len(values) > 1:
        raise InvalidValue("from_seq given more than once")
    raw = values[0]
    # isdecimal() also rejects "+1", " 1" and "1_000", which int() would take.
    if not (raw.isascii() and raw.isdecimal()) or int(raw) < 1:
        raise InvalidValue(f"from_seq must be an integer of at least 1, got {raw!r}")
    return int(raw)
