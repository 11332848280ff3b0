"""The scheduler: runs the steps of working orders at their due time, on one thread off the request threads."""

from __future__ import annotations

import heapq
import itertools
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Protocol

SCHEDULER_STOP_TIMEOUT_S = 2.0


class JobScheduler(Protocol):
    """What the exchange needs of a scheduler; unit tests hand it one that runs due jobs when told, on its own clock."""

    def now(self) -> float: ...

    def start(self) -> None: ...

    def call_at(self, when: float, job: Callable[[], None]) -> None: ...

    def clear(self) -> None: ...

    def stop(self) -> None: ...


class Scheduler:
    """One thread that calls each job at its due time; jobs due at the same time run in submission order."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="exchange-engine", daemon=True)

    def now(self) -> float:
        """The clock due times are on."""
        return time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def call_at(self, when: float, job: Callable[[], None]) -> None:
        """Run job at now() == when (or as soon after as the thread gets to it)."""
        with self._condition:
            if self._stopped:
                return
            heapq.heappush(self._queue, (when, next(self._counter), job))
            self._condition.notify()

    def clear(self) -> None:
        """Drop every job not started yet."""
        with self._condition:
            self._queue.clear()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._queue.clear()
            self._condition.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=SCHEDULER_STOP_TIMEOUT_S)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopped:
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        break
                    self._condition.wait(None if not self._queue else self._queue[0][0] - now)
                if self._stopped:
                    return
                _, _, job = heapq.heappop(self._queue)
            # Outside the condition: a job takes the exchange's lock, and call_at is called under it.
            try:
                job()
            except Exception:
                traceback.print_exc(file=sys.stderr)
