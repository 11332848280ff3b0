"""How many batches an SQS event source mapping runs at once: Lambda's scaling rule, and the pollers following it.

Lambda's SQS mapping (docs: "Configuring scaling behavior for SQS event source
mappings") long-polls with few pollers while the queue is quiet, adds
concurrent batches while messages keep coming (up to 300 more a minute, at
most 1,000, or the mapping's ScalingConfig.MaximumConcurrency), and scales
back when traffic falls. Here the same rule is applied per receive, from one
poller (the machine is small and an idle queue needs only one long poll) up to
the mapping's maximum concurrency, optionally capped lower by the runner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from devstack.runner.sqs import SQS_MAX_MESSAGES_PER_CALL, BatchReport, SqsPoller, SqsSource
from devstack.runner.worker import Worker

# One logger for the whole runner, as before it was a package: log filters and lines stay the same.
log = logging.getLogger("devstack.runner")

# Lambda's own ceiling for an SQS mapping without ScalingConfig.
LAMBDA_SQS_MAX_CONCURRENT_BATCHES = 1000


@dataclass(frozen=True)
class ScalingPolicy:
    """Observations in, concurrency out: one more batch after a full one, one fewer after an empty receive."""

    maximum: int
    minimum: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(f"need 1 <= minimum ({self.minimum}) <= maximum ({self.maximum})")

    def next_concurrency(self, current: int, received: int, full_batch: int) -> int:
        """The concurrency after one receive by one poller that got `received` messages of a possible `full_batch`."""
        if received >= full_batch:
            wanted = current + 1  # a full batch: more is waiting than this many pollers take
        elif received == 0:
            wanted = current - 1  # a long poll that found nothing: one poller too many
        else:
            wanted = current  # the pollers keep up with what arrives
        return max(self.minimum, min(self.maximum, wanted))


def full_batch_size(source: SqsSource) -> int:
    """What a full batch is: one receive caps at 10; only a batching window gathers more."""
    return source.batch_size if source.window_s > 0 else min(source.batch_size, SQS_MAX_MESSAGES_PER_CALL)


def maximum_concurrency(source: SqsSource, runner_cap: int | None) -> int:
    """The mapping's maximum concurrency (Lambda's 1,000 if it sets none), lowered to the runner's cap if given."""
    maximum = source.maximum_concurrency or LAMBDA_SQS_MAX_CONCURRENT_BATCHES
    return max(1, min(maximum, runner_cap)) if runner_cap else maximum


class ScalingSqsMapping(Worker):
    """An SQS event source mapping whose pollers follow a ScalingPolicy; each poller is one concurrent batch.

    Has no thread of its own: the pollers report each receive, and the one
    whose receive tipped the count adds a poller or retires itself. A poller
    that came back empty is the one to go, so nothing it holds is abandoned.
    A poller that could not be added is logged and skipped: the receive that
    asked for it goes on to invoke its messages (they must not wait out their
    visibility timeout and lose a receive to a scaling failure).
    """

    def __init__(self, source: SqsSource, policy: ScalingPolicy, new_poller: Callable[[int], SqsPoller]) -> None:
        super().__init__(f"sqs:{source.name}", source.name)
        self.source = source
        self.policy = policy
        # Must be cheap (no client built here): it runs under the pool's lock, on the thread of a
        # poller that holds a full batch it has not invoked yet.
        self.new_poller = new_poller
        self.full_batch = full_batch_size(source)
        self.concurrency = policy.minimum
        self.peak = 0  # the most pollers that ever ran at once
        self.pollers: list[SqsPoller] = []
        self._lock = threading.Lock()
        self._next_index = 0
        self._one_shot: SqsPoller | None = None

    def start(self) -> None:
        with self._lock:
            added = self._add_pollers()
        self._start_pollers(added)

    def _add_pollers(self) -> list[SqsPoller]:
        """Under the lock: the pollers that bring the pool up to the current concurrency, listed but not started."""
        added: list[SqsPoller] = []
        while len(self.pollers) < self.concurrency:
            try:
                poller = self.new_poller(self._next_index)
            except Exception:
                log.exception("%s: could not add poller #%d", self.name, self._next_index)
                self.concurrency = max(self.policy.minimum, len(self.pollers))
                break
            self._next_index += 1
            poller.on_receive = self.observe
            self.pollers.append(poller)
            added.append(poller)
        self.peak = max(self.peak, len(self.pollers))
        return added

    def _start_pollers(self, pollers: list[SqsPoller]) -> None:
        """Outside the lock. One stopped meanwhile starts, sees its stop flag and ends at once."""
        for poller in pollers:
            try:
                poller.start()
            except Exception:  # e.g. RuntimeError "can't start new thread"
                log.exception("%s: could not start %s", self.name, poller.name)
                with self._lock:
                    if poller in self.pollers:
                        self.pollers.remove(poller)
                    self.concurrency = max(self.policy.minimum, min(self.concurrency, len(self.pollers)))

    def observe(self, poller: SqsPoller, received: int) -> bool:
        """One receive's outcome; True tells the poller to retire. Never raises: the poller holds messages."""
        with self._lock:
            if self.stopping.is_set():
                return False
            before = self.concurrency
            self.concurrency = self.policy.next_concurrency(before, received, self.full_batch)
            retire = received == 0 and len(self.pollers) > self.concurrency and poller in self.pollers
            if retire:
                self.pollers.remove(poller)
            added = self._add_pollers()
            after = self.concurrency
        self._start_pollers(added)
        if after != before:
            why = f"a full batch of {received}" if received else "an empty receive"
            log.info("%s: concurrency %d -> %d after %s", self.name, before, after, why)
        return retire

    def poll_once(self) -> BatchReport | None:
        """One receive-invoke-delete cycle on the calling thread (tests), outside the pool's scaling."""
        if self._one_shot is None:
            self._one_shot = self.new_poller(0)
        return self._one_shot.poll_once()

    def _current(self) -> list[SqsPoller]:
        with self._lock:
            return list(self.pollers)

    def request_stop(self) -> None:
        with self._lock:
            self.stopping.set()  # under the lock: no poller is added after the list below
            pollers = list(self.pollers)
        for poller in pollers:
            poller.request_stop()

    def join(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        done = True
        for poller in self._current():
            done = poller.join(deadline - time.monotonic()) and done
        return done
