"""The exchange itself: order book, counters, knobs and the execution engine, behind one lock."""

from __future__ import annotations

import datetime
import itertools
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from devstack.exchange_sim.config import SimConfig
from devstack.exchange_sim.feed_log import FeedLog
from devstack.exchange_sim.fill_plans import STATUS_OF_EXEC_TYPE, Execution, Step, plan_execution
from devstack.exchange_sim.orders import (
    CONNECTION_NOT_AVAILABLE,
    CancelDecision,
    CancelOutcome,
    Decision,
    InvalidOrder,
    OrderRequest,
    Outcome,
)
from devstack.exchange_sim.scheduler import Scheduler

# /stats totals over DELETE /orders/{id}; requests, accepted and failures count POST /orders alone.
CANCEL_COUNTERS = ("cancel_requests", "canceled_by_request", "cancels_too_late", "cancels_unknown", "cancel_failures")


def utc_timestamp() -> str:
    """Now as ISO 8601 UTC with milliseconds and a Z, as in `2026-11-23T21:07:06.123Z`."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class OrderRecord:
    """Everything the exchange saw for one client order id."""

    exchange_order_id: str | None = None
    order: OrderRequest | None = None
    accepted: int = 0
    duplicates_rejected: int = 0
    failures: int = 0
    cancel_requests: int = 0
    canceled_by_request: int = 0
    cancels_too_late: int = 0
    cancel_failures: int = 0
    execution: Execution | None = None

    def counters(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "duplicates_rejected": self.duplicates_rejected,
            "failures": self.failures,
            "cancel_requests": self.cancel_requests,
            "canceled_by_request": self.canceled_by_request,
            "cancels_too_late": self.cancels_too_late,
            "cancel_failures": self.cancel_failures,
        }


def _derived_random(seed: int | None, purpose: str) -> random.Random:
    # A stream of its own per purpose: working orders must not shift the failure draws that
    # a seeded run of order entry alone reproduces. A str seed is hashed with SHA-512, not salted.
    return random.Random(None if seed is None else f"{seed}:{purpose}")


class ExchangeState:
    """The order book, counters, knobs and execution engine; every method is safe to call from any thread."""

    def __init__(self, config: SimConfig, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(seed)
        self._engine_rng = _derived_random(seed, "engine")
        self._feed_rng = _derived_random(seed, "feed")
        self._cancel_rng = _derived_random(seed, "cancel")
        # Exchange order ids and exec ids stay unique across resets and restarts: a backend
        # that stored one from an earlier run must never see it handed out again.
        token = secrets.token_hex(3)
        self._id_prefix = f"X{token}-"
        self._id_sequence = itertools.count(1)
        self._exec_prefix = f"E{token}-"
        self._exec_sequence = itertools.count(1)
        self._orders: dict[str, OrderRecord] = {}
        self._requests = 0
        self._accepted = 0
        self._duplicates_rejected = 0
        self._failures = 0
        self._cancel_counts = dict.fromkeys(CANCEL_COUNTERS, 0)
        # Bumped by reset: a step already taken off the scheduler when the reset happened
        # sees a different generation and does nothing.
        self._generation = 0
        self.feed_log = FeedLog()
        self._scheduler = Scheduler()

    def start(self) -> None:
        """Start working accepted orders in the background."""
        self._scheduler.start()

    def stop(self) -> None:
        """Stop working orders; no report is emitted after this returns."""
        self._scheduler.stop()

    @property
    def config(self) -> SimConfig:
        with self._lock:
            return self._config

    def update_config(self, changes: object) -> SimConfig:
        with self._lock:
            self._config = self._config.updated(changes)
            return self._config

    def reset(self) -> None:
        """Forget every order, counter and pending execution step.

        Knobs, the random streams, the id sequences and the feed log go on: a feed client
        (the bridge) has checkpointed a seq, so seq must never start again at 1 within a
        process. Orders still being worked get no further report, not even a terminal one.
        """
        with self._lock:
            self._orders.clear()
            self._requests = self._accepted = self._duplicates_rejected = self._failures = 0
            self._cancel_counts = dict.fromkeys(CANCEL_COUNTERS, 0)
            self._generation += 1
            self._scheduler.clear()

    def submit(self, request: OrderRequest | InvalidOrder) -> Decision:
        """Decide one order entry attempt; the duplicate check and the acceptance are one step."""
        with self._lock:
            self._requests += 1
            # One draw per attempt whatever the rate, so a seeded run gives the same
            # failure pattern even if the rate is changed in between.
            failed = self._rng.random() < self._config.failure_rate
            client_order_id = request.client_order_id
            if failed:
                # The request never reached the matching engine: nothing is decided, so even
                # an invalid order or a duplicate just sees the connection fail.
                self._failures += 1
                if client_order_id is not None:
                    self._orders.setdefault(client_order_id, OrderRecord()).failures += 1
                return Decision(Outcome.FAILED, client_order_id, problem=CONNECTION_NOT_AVAILABLE)
            if isinstance(request, InvalidOrder):
                return Decision(Outcome.INVALID, client_order_id, problem=request.problem)
            record = self._orders.setdefault(request.client_order_id, OrderRecord())
            if record.exchange_order_id is not None:
                record.duplicates_rejected += 1
                self._duplicates_rejected += 1
                return Decision(Outcome.DUPLICATE, request.client_order_id, record.exchange_order_id)
            record.exchange_order_id = f"{self._id_prefix}{next(self._id_sequence):06d}"
            record.order = request
            record.accepted += 1
            self._accepted += 1
            self._schedule(request, plan_execution(request, self._config, self._engine_rng))
            return Decision(Outcome.ACCEPTED, request.client_order_id, record.exchange_order_id)

    def _schedule(self, order: OrderRequest, steps: Sequence[Step]) -> None:
        # Absolute due times from one start: steps of one order never overtake each other,
        # and the scheduler runs equal due times in submission order.
        due = time.monotonic()
        generation = self._generation
        for step in steps:
            due += step.delay_s
            self._scheduler.call_at(due, self._step_job(order.client_order_id, generation, step))

    def _step_job(self, client_order_id: str, generation: int, step: Step) -> Callable[[], None]:
        return lambda: self._emit(client_order_id, generation, step)

    def _emit(self, client_order_id: str, generation: int, step: Step) -> None:
        """Apply one step to the order and log its report; the feed sends it from the log."""
        with self._lock:
            record = self._orders.get(client_order_id)
            if generation != self._generation or record is None or record.order is None:
                return
            # A cancel on request ends the order ahead of its plan: the steps still queued
            # for it (fills, the venue's own ending) must not follow its terminal report.
            if record.execution is not None and record.execution.done:
                return
            self._report(client_order_id, record, step)

    def _report(self, client_order_id: str, record: OrderRecord, step: Step) -> None:
        """Apply step to an accepted order and log its report; the caller holds the lock."""
        assert record.order is not None
        execution = record.execution or Execution(record.order.quantity)
        record.execution = execution
        exec_id = f"{self._exec_prefix}{next(self._exec_sequence):08d}"
        execution.last_exec_type = step.exec_type
        if step.last_price is not None:
            execution.cum_qty += step.last_qty
            execution.notional += step.last_price * step.last_qty
        execution.exec_ids.append(exec_id)
        report = {
            "exec_id": exec_id,
            "client_order_id": client_order_id,
            "exchange_order_id": record.exchange_order_id,
            "exec_type": step.exec_type,
            "last_qty": step.last_qty,
            "last_price": None if step.last_price is None else str(step.last_price),
            "cum_qty": execution.cum_qty,
            "leaves_qty": execution.leaves_qty,
            "avg_price": execution.avg_price(),
            "transact_time": utc_timestamp(),
        }
        # Two draws per report whatever the rates, for the same reason as in submit.
        duplicate = self._feed_rng.random() < self._config.feed_duplicate_rate
        reorder = self._feed_rng.random() < self._config.feed_reorder_rate
        # Under the lock, so that seq order is the order in which the reports happened.
        self.feed_log.append(report, duplicate=duplicate, reorder=reorder)

    def cancel(self, client_order_id: str) -> CancelDecision:
        """Decide one cancel attempt; the check that the order is live and its ending are one step."""
        with self._lock:
            self._cancel_counts["cancel_requests"] += 1
            # A stream of its own, one draw per attempt: cancels must not shift the seeded
            # failure pattern of order entry, nor the engine's plans.
            failed = self._cancel_rng.random() < self._config.failure_rate
            record = self._orders.get(client_order_id)
            if record is not None:
                record.cancel_requests += 1
            if failed:
                # As for order entry: the request never reached the matching engine.
                self._cancel_counts["cancel_failures"] += 1
                if record is not None:
                    record.cancel_failures += 1
                return CancelDecision(CancelOutcome.FAILED)
            # A record without an exchange order id is one whose every entry attempt failed.
            if record is None or record.exchange_order_id is None or record.order is None:
                self._cancel_counts["cancels_unknown"] += 1
                return CancelDecision(CancelOutcome.UNKNOWN)
            execution = record.execution
            if execution is not None and execution.done:
                self._cancel_counts["cancels_too_late"] += 1
                record.cancels_too_late += 1
                return CancelDecision(
                    CancelOutcome.TOO_LATE, record.exchange_order_id, STATUS_OF_EXEC_TYPE[execution.last_exec_type]
                )
            if execution is None:
                # Accepted but not acknowledged on the feed yet: the venue acknowledges before
                # it cancels, so a consumer still sees `new` first, as the protocol promises.
                self._report(client_order_id, record, Step(0.0, "new"))
            # Terminal, so _emit drops whatever is still queued for this order.
            self._report(client_order_id, record, Step(0.0, "canceled"))
            self._cancel_counts["canceled_by_request"] += 1
            record.canceled_by_request += 1
            return CancelDecision(CancelOutcome.CANCELED, record.exchange_order_id)

    def order_view(self, client_order_id: str) -> dict[str, Any] | None:
        """What the exchange knows about one client order id, or None if it never saw it."""
        with self._lock:
            record = self._orders.get(client_order_id)
            if record is None:
                return None
            return {
                "client_order_id": client_order_id,
                "exchange_order_id": record.exchange_order_id,
                **record.counters(),
                "order": None if record.order is None else record.order.to_json(),
                "execution": None if record.execution is None else record.execution.to_json(),
            }

    def stats(self) -> dict[str, Any]:
        """Totals over all order entry and cancel attempts since start or the last reset, and the feed's last seq."""
        with self._lock:
            return {
                "requests": self._requests,
                "accepted": self._accepted,
                "duplicates_rejected": self._duplicates_rejected,
                "failures": self._failures,
                **self._cancel_counts,
                "orders": {order_id: record.counters() for order_id, record in self._orders.items()},
                "feed_seq": self.feed_log.last_seq,
            }
