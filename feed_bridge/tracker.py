"""Which feed sequence numbers are on Kinesis, and the highest one below which none is missing."""

from __future__ import annotations

from collections.abc import Iterable


class SeqTracker:
    """Contiguous high-water mark of sequence numbers handed to Kinesis.

    The feed numbers reports 1, 2, 3, ... without gaps, but a live stream may
    repeat a report or swap neighbours, and batches complete one at a time.
    `checkpoint` is the highest S such that every seq <= S has been put: resuming
    the feed from S + 1 then loses nothing. Seqs above S are remembered until
    the hole below them fills, so that a repeat is recognised and not put twice.
    """

    def __init__(self, checkpoint: int = 0) -> None:
        if checkpoint < 0:
            raise ValueError(f"checkpoint must be >= 0, got {checkpoint}")
        self._checkpoint = checkpoint
        self._accepted: set[int] = set()  # taken for putting, not yet put
        self._put: set[int] = set()  # put, but above a hole

    @property
    def checkpoint(self) -> int:
        return self._checkpoint

    @property
    def in_flight(self) -> int:
        """Seqs accepted and not yet put."""
        return len(self._accepted)

    @property
    def put_above_checkpoint(self) -> int:
        """Seqs already put that wait for a hole below them to fill (0 when the feed is in order)."""
        return len(self._put)

    def accept(self, seq: int) -> bool:
        """True if seq is new and should be put; False for a seq already put, in flight or below the checkpoint."""
        if seq <= self._checkpoint or seq in self._accepted or seq in self._put:
            return False
        self._accepted.add(seq)
        return True

    def release(self, seq: int) -> None:
        """Forget an accepted seq that will not be put after all (reading stopped before it was buffered)."""
        self._accepted.discard(seq)

    def mark_put(self, seqs: Iterable[int]) -> int:
        """Record seqs as stored on Kinesis; returns the checkpoint, advanced over every hole now filled."""
        for seq in seqs:
            self._accepted.discard(seq)
            if seq > self._checkpoint:
                self._put.add(seq)
        while self._checkpoint + 1 in self._put:
            self._checkpoint += 1
            self._put.remove(self._checkpoint)
        return self._checkpoint
