"""The buffer between the feed reader and Kinesis: batches by count, bytes and linger time."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from feed_bridge.records import Record
from feed_bridge.settings import MAX_PUT_RECORDS

# PutRecords takes at most 5 MiB per call (data plus partition keys).
MAX_PUT_BYTES = 5 * 1024 * 1024


class RecordBuffer:
    """FIFO of records; next_batch() hands out a batch once it is full or its oldest record has lingered.

    Lingering trades a little latency for far fewer PutRecords calls when
    reports trickle in. put() waits while max_records are buffered, which stops
    the reader and lets the WebSocket push back on the exchange.
    """

    def __init__(
        self,
        batch_size: int = MAX_PUT_RECORDS,
        linger_s: float = 0.1,
        max_records: int = 20_000,
        max_batch_bytes: int = MAX_PUT_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= batch_size <= MAX_PUT_RECORDS:
            raise ValueError(f"batch_size must be 1..{MAX_PUT_RECORDS}, got {batch_size}")
        if max_records < batch_size:
            raise ValueError(f"max_records ({max_records}) must be >= batch_size ({batch_size})")
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.max_records = max_records
        self.max_batch_bytes = max_batch_bytes
        self._clock = clock
        self._records: deque[Record] = deque()
        self._arrivals: deque[float] = deque()  # when each buffered record came in, for the linger
        self._bytes = 0
        self._closed = False
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, record: Record) -> None:
        """Append a record, waiting while the buffer is full."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._records) < self.max_records or self._closed)
            if self._closed:
                raise BufferClosed("buffer closed")
            self._records.append(record)
            self._arrivals.append(self._clock())
            self._bytes += record.size
            self._changed.notify_all()

    async def close(self) -> None:
        """No more puts: next_batch() now hands out what is left without lingering, then empty batches."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    async def next_batch(self) -> list[Record]:
        """The next batch: waits for a record, then for a full batch or the linger time; [] once closed and empty."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._records) or self._closed)
            while not self._closed and not self._full():
                remaining = self._arrivals[0] + self.linger_s - self._clock()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await self._changed.wait()
                except TimeoutError:
                    break
            batch = self._take()
            self._changed.notify_all()  # a reader may wait for room
            return batch

    def _full(self) -> bool:
        return len(self._records) >= self.batch_size or self._bytes >= self.max_batch_bytes

    def _take(self) -> list[Record]:
        batch: list[Record] = []
        size = 0
        while self._records and len(batch) < self.batch_size:
            record = self._records[0]
            # Always take at least one record: a single record never exceeds the
            # per-call limit (parse_report rejects those), so this cannot stall.
            if batch and size + record.size > self.max_batch_bytes:
                break
            batch.append(self._records.popleft())
            self._arrivals.popleft()
            size += record.size
        self._bytes -= size
        return batch


class BufferClosed(RuntimeError):
    """put() after close(): the bridge is shutting down and reads nothing more."""
