"""Exponential backoff with jitter, and putting a batch until every record is stored, retrying only failures."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from feed_bridge.records import Record

log = logging.getLogger("feed_bridge.retry")

# 2**62 * any sane minimum is far above any maximum; the cap keeps the
# arithmetic in floats of normal size however long an outage lasts.
_MAX_EXPONENT = 62


class Backoff:
    """Delays that double per attempt from min_s up to max_s, each drawn from the upper half of its ceiling.

    The jitter spreads the retries of many bridges (or many failed records)
    over time; the floor of half the ceiling keeps delays from collapsing to 0.
    """

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError(f"need 0 < min_s <= max_s, got {min_s}, {max_s}")
        self.min_s = min_s
        self.max_s = max_s
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number attempt + 1 (attempt counts from 0)."""
        ceiling = min(self.max_s, self.min_s * 2 ** min(max(attempt, 0), _MAX_EXPONENT))
        return self._rng.uniform(max(self.min_s, ceiling / 2), ceiling)


class SinkError(RuntimeError):
    """A put call failed as a whole (endpoint down, throttled, timed out): every record in it is to be retried."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


Errors = Sequence[str | None]
BlockingRunner = Callable[[Callable[[], Errors]], Awaitable[Errors]]


async def _in_thread(function: Callable[[], Errors]) -> Errors:
    return await asyncio.to_thread(function)


class RecordSink(Protocol):
    """Where records go: Kinesis in production, a list in unit tests."""

    def put_records(self, records: Sequence[Record]) -> Sequence[str | None]:
        """Put one batch (within the per-call limits); per record None if stored, else its error code.

        Raises SinkError if the call as a whole failed.
        """
        ...


def split_results(records: Sequence[Record], errors: Sequence[str | None]) -> tuple[list[Record], list[Record]]:
    """(stored, failed) records of one put call, each in the original order; failed ones keep their data."""
    if len(errors) != len(records):
        # PutRecords answers one entry per record, in order; anything else
        # means we cannot tell what was stored, so everything goes again.
        return [], list(records)
    stored: list[Record] = []
    failed: list[Record] = []
    for record, error in zip(records, errors, strict=True):
        (stored if error is None else failed).append(record)
    return stored, failed


@dataclass
class PutOutcome:
    """How a batch got onto the sink."""

    attempts: int = 0
    retried_records: int = 0
    error_codes: Counter[str] = field(default_factory=Counter)


async def put_until_stored(
    sink: RecordSink,
    records: Sequence[Record],
    backoff: Backoff,
    *,
    on_stored: Callable[[Sequence[Record]], None] = lambda _records: None,
    run_blocking: BlockingRunner | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> PutOutcome:
    """Put records until all are stored, resending only the failed ones, with backoff between attempts.

    Never gives up on its own: a report dropped here would be missing
    downstream, while a delay is only a delay. The caller bounds it by
    cancelling (shutdown grace); each attempt is bounded by the sink's timeouts.
    on_stored sees the records each attempt stored, so progress survives a
    cancellation half way. run_blocking runs the blocking sink call (default:
    asyncio.to_thread, so the event loop keeps reading the feed meanwhile).
    """
    outcome = PutOutcome()
    pending = list(records)
    while pending:
        batch = pending
        try:
            errors = await (run_blocking or _in_thread)(functools.partial(sink.put_records, batch))
        except SinkError as exc:
            errors = [exc.code] * len(batch)
        outcome.attempts += 1
        stored, pending = split_results(batch, errors)
        if stored:
            on_stored(stored)
        if not pending:
            break
        codes = Counter(error for error in errors if error is not None) or Counter({"malformed answer": 1})
        outcome.error_codes.update(codes)
        outcome.retried_records += len(pending)
        delay = backoff.delay(outcome.attempts - 1)
        log.warning(
            "put: %d of %d records failed (%s), retrying them in %.2fs (attempt %d)",
            len(pending),
            len(batch),
            ", ".join(f"{code} x{count}" for code, count in codes.most_common()),
            delay,
            outcome.attempts,
        )
        await sleep(delay)
    return outcome
