"""The feed log: every execution report emitted in this process, in seq order, and the from_seq that reads it.

Besides the engine's own reports, a test may put any JSON object on the feed
as it is (POST /admin/feed/raw, see parse_raw_reports): implausible and
malformed reports that travel the real feed -> bridge -> Kinesis -> consumer path.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
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
        def entry(seq: int) -> FeedEntry:
            logged = {"seq": seq, **report}
            return FeedEntry(seq, logged, json.dumps(logged), duplicate, reorder)

        return self._add(entry).report

    def append_raw(self, message: Mapping[str, Any]) -> int:
        """Log message as it is (a seq only if it has none); its numbers keep their text. Returns its place in the log.

        Test-only: nothing checks it, so a message with a wrong seq of its
        own is sent with that seq, which a bridge may take for a duplicate.
        """

        def entry(seq: int) -> FeedEntry:
            logged = dict(message) if "seq" in message else {"seq": seq, **message}
            text = _raw_json(logged)
            # The replay endpoint (GET /executions) answers with the report as Python reads it.
            return FeedEntry(seq, json.loads(text), text, duplicate=False, reorder=False)

        return self._add(entry).seq

    def _add(self, entry_at: Callable[[int], FeedEntry]) -> FeedEntry:
        with self._lock:
            entry = entry_at(len(self._entries) + 1)
            self._entries.append(entry)
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return entry

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


def parse_raw_reports(body: bytes) -> list[dict[str, Any]]:
    """The messages of a POST /admin/feed/raw body (a JSON object, or a list of them); InvalidValue otherwise.

    Numbers are read as Decimal so that they go on the feed with the text they
    came with: 1e400 stays 1e400 (json would make it inf, then Infinity).
    """
    try:
        parsed = json.loads(body, parse_float=Decimal)
    except ValueError:
        raise InvalidValue("body must be a JSON object or a list of JSON objects") from None
    messages = parsed if isinstance(parsed, list) else [parsed]
    if not messages or not all(isinstance(message, dict) for message in messages):
        raise InvalidValue("body must be a JSON object or a non-empty list of JSON objects")
    return messages


def _raw_json(value: object) -> str:
    """value as JSON, each Decimal written as the number it is (json.dumps cannot write one as a number)."""
    numbers: list[str] = []
    marker = uuid.uuid4().hex

    def stand_in(number: object) -> str:
        if not isinstance(number, Decimal):
            raise TypeError(f"{type(number).__name__} is not JSON")
        numbers.append(str(number))
        return f"{marker}{len(numbers) - 1}"

    text = json.dumps(value, default=stand_in)
    return re.sub(f'"{marker}(\\d+)"', lambda match: numbers[int(match[1])], text)
