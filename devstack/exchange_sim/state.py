"""The exchange itself: order book, counters, knobs, faults, price paths and the execution engine, behind one lock."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import itertools
import random
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from devstack.exchange_sim.config import SimConfig
from devstack.exchange_sim.feed_log import FeedLog
from devstack.exchange_sim.fill_plans import (
    STATUS_OF_EXEC_TYPE,
    Execution,
    Step,
    plan_execution,
    plan_triggered,
    reference_price,
)
from devstack.exchange_sim.orders import (
    CONNECTION_NOT_AVAILABLE,
    STOP_TYPES,
    TRIGGERED_TYPE,
    CancelDecision,
    CancelOutcome,
    Decision,
    InvalidOrder,
    OrderRequest,
    Outcome,
    StatusDecision,
    StatusOutcome,
)
from devstack.exchange_sim.prices import Market, PendingStop
from devstack.exchange_sim.replace import REPLACE_COUNTERS, Replacing
from devstack.exchange_sim.scheduler import JobScheduler, Scheduler
from devstack.exchange_sim.time_in_force import Lifetime, expiry_of, lifetime_of

# /stats totals over DELETE /orders/{id}; requests, accepted and failures count POST /orders alone.
CANCEL_COUNTERS = ("cancel_requests", "canceled_by_request", "cancels_too_late", "cancels_unknown", "cancel_failures")
# Over GET /orders/{id}, the order status query.
STATUS_COUNTERS = ("status_requests", "status_failures", "status_unknown")
# The faults the lost-answer and feed-loss knobs made, so that a chaos run can say how many.
FAULT_COUNTERS = ("lost_answers", "lost_reports")
TOTAL_COUNTERS = CANCEL_COUNTERS + REPLACE_COUNTERS + STATUS_COUNTERS + FAULT_COUNTERS
# Order entry outcomes whose answer the lost-answer knobs drop; a malformed order is answered
# 400 before the exchange decides anything about its client order id.
ANSWERS_THAT_CAN_BE_LOST = frozenset({Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.FAILED})


def utc_timestamp(moment: datetime.datetime | None = None) -> str:
    """A moment (default now) as ISO 8601 UTC with milliseconds and a Z, as in `2026-11-23T21:07:06.123Z`."""
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    status_requests: int = 0
    status_failures: int = 0
    lost_answers: int = 0
    lost_reports: int = 0
    accepted_at: str | None = None
    execution: Execution | None = None
    # When the order expires unless something ends it before (session close, expires_at); None: never.
    expiry: datetime.datetime | None = None
    # The price that triggered a stop order; None before (and for any other order).
    trigger_price: Decimal | None = None
    # Cancel/replace links: the order this one replaced, and the one that replaced it.
    orig_client_order_id: str | None = None
    replaced_by: str | None = None
    # Replace requests naming this order (REPLACE_COUNTERS), kept as one dict: they move together.
    replace_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPLACE_COUNTERS, 0))

    def counters(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "duplicates_rejected": self.duplicates_rejected,
            "failures": self.failures,
            "cancel_requests": self.cancel_requests,
            "canceled_by_request": self.canceled_by_request,
            "cancels_too_late": self.cancels_too_late,
            "cancel_failures": self.cancel_failures,
            **self.replace_counts,
            "status_requests": self.status_requests,
            "status_failures": self.status_failures,
            "lost_answers": self.lost_answers,
            "lost_reports": self.lost_reports,
        }


def _derived_random(seed: int | None, purpose: str) -> random.Random:
    # A stream of its own per purpose: working orders must not shift the failure draws that
    # a seeded run of order entry alone reproduces. A str seed is hashed with SHA-512, not salted.
    return random.Random(None if seed is None else f"{seed}:{purpose}")


class ExchangeState(Replacing):
    """The order book, counters, knobs and execution engine; every method is safe to call from any thread.

    Cancel/replace (`replace`) is in replace.py, on the same lock and records.
    """

    def __init__(self, config: SimConfig, seed: int | None = None, scheduler: JobScheduler | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(seed)
        self._engine_rng = _derived_random(seed, "engine")
        self._feed_rng = _derived_random(seed, "feed")
        self._cancel_rng = _derived_random(seed, "cancel")
        self._replace_rng = _derived_random(seed, "replace")
        self._answer_rng = _derived_random(seed, "answers")
        self._status_rng = _derived_random(seed, "status")
        self._feed_loss_rng = _derived_random(seed, "feed-loss")
        self._price_rng = _derived_random(seed, "prices")
        self._market = Market()
        # Which client order ids lose every answer is a hash of the id under this salt: the
        # same ids in every run with one seed, whatever else happened in between.
        self._lost_order_salt = secrets.token_hex(8) if seed is None else str(seed)
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
        self._counts = dict.fromkeys(TOTAL_COUNTERS, 0)
        # Bumped by reset: a step already taken off the scheduler when the reset happened
        # sees a different generation and does nothing.
        self._generation = 0
        self.feed_log = FeedLog()
        self._scheduler = scheduler or Scheduler()

    def start(self) -> None:
        """Start working accepted orders, and walking prices, in the background."""
        with self._lock:
            self._schedule_tick()
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
            self._counts = dict.fromkeys(TOTAL_COUNTERS, 0)
            self._generation += 1
            self._scheduler.clear()
            self._market.clear()
            # The clear dropped the price path's next tick too.
            self._schedule_tick()

    def submit(self, request: OrderRequest | InvalidOrder) -> Decision:
        """Decide one order entry attempt; the duplicate check and the acceptance are one step."""
        with self._lock:
            self._requests += 1
            # One draw per attempt whatever the rate, so a seeded run gives the same
            # failure pattern even if the rate is changed in between.
            failed = self._rng.random() < self._config.failure_rate
            # From a stream of its own, one per attempt: turning this knob on must not
            # shift the failure pattern of a seeded run.
            answer_lost = self._answer_rng.random() < self._config.lost_answer_rate
            decision = self._decide(request, failed)
            client_order_id = decision.client_order_id
            if client_order_id is None or decision.outcome not in ANSWERS_THAT_CAN_BE_LOST:
                return decision
            if not self._answer_lost(client_order_id, answer_lost and decision.outcome is Outcome.ACCEPTED):
                return decision
            return dataclasses.replace(decision, answer_lost=True)

    def _answer_lost(self, client_order_id: str, drawn: bool) -> bool:
        """Whether the lost-answer knobs drop this answer (counted if so); drawn: the rate's draw hit an acceptance.

        The rate loses the answer to an acceptance only (the exchange has the order, the
        client cannot know); the chosen ids lose every answer, so no retry ever learns.
        The caller holds the lock.
        """
        if not (drawn or self._loses_every_answer(client_order_id)):
            return False
        self._counts["lost_answers"] += 1
        record = self._orders.get(client_order_id)
        if record is not None:
            record.lost_answers += 1
        return True

    def _loses_every_answer(self, client_order_id: str) -> bool:
        """Whether this id is among the share whose every order entry answer is lost; the caller holds the lock."""
        rate = self._config.lost_answer_order_rate
        if rate <= 0:
            return False
        digest = hashlib.sha256(f"{self._lost_order_salt}:{client_order_id}".encode()).digest()
        # A point in [0, 1) fixed per id: raising the rate only ever adds ids to the share.
        return int.from_bytes(digest[:8], "big") / 2**64 < rate

    def _decide(self, request: OrderRequest | InvalidOrder, failed: bool) -> Decision:
        """The exchange's decision on one attempt, its answer not yet lost or kept; the caller holds the lock."""
        client_order_id = request.client_order_id
        if failed:
            # The request never reached the matching engine: nothing is decided, so even
            # an invalid order or a duplicate just sees the connection fail.
            self._failures += 1
            if client_order_id is not None:
                self._record(client_order_id).failures += 1
            return Decision(Outcome.FAILED, client_order_id, problem=CONNECTION_NOT_AVAILABLE)
        if isinstance(request, InvalidOrder):
            return Decision(Outcome.INVALID, client_order_id, problem=request.problem)
        record = self._record(request.client_order_id)
        if record.exchange_order_id is not None:
            record.duplicates_rejected += 1
            self._duplicates_rejected += 1
            return Decision(Outcome.DUPLICATE, request.client_order_id, record.exchange_order_id)
        lifetime = self._accept(record, request)
        record.accepted += 1
        self._accepted += 1
        self._schedule(request, plan_execution(request, self._config, self._engine_rng, lifetime))
        return Decision(Outcome.ACCEPTED, request.client_order_id, record.exchange_order_id)

    def _record(self, client_order_id: str) -> OrderRecord:
        """The record of a client order id, a fresh one if it was never seen; the caller holds the lock."""
        return self._orders.setdefault(client_order_id, OrderRecord())

    def _accept(self, record: OrderRecord, request: OrderRequest) -> Lifetime:
        """Record request as accepted now under a new exchange order id; its plan's lifetime. Caller holds the lock."""
        record.exchange_order_id = f"{self._id_prefix}{next(self._id_sequence):06d}"
        record.order = request
        now = datetime.datetime.now(datetime.UTC)
        record.accepted_at = utc_timestamp(now)
        record.expiry = expiry_of(request, self._config, now)
        return lifetime_of(request, self._config, record.expiry, now)

    def _schedule(self, order: OrderRequest, steps: Sequence[Step]) -> None:
        # Absolute due times from one start: steps of one order never overtake each other,
        # and the scheduler runs equal due times in submission order.
        due = self._scheduler.now()
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
            if step.exec_type == "new":
                self._watch_if_stop(client_order_id, record.order)

    def _watch_if_stop(self, client_order_id: str, order: OrderRequest) -> None:
        """Watch a just acknowledged stop order's price; the caller holds the lock."""
        if order.type in STOP_TYPES and order.stop_price is not None:
            # Watched from its acknowledgement on, so that `new` always comes before its fills;
            # a stop whose price is already reached triggers right away.
            stop_price = Decimal(repr(order.stop_price))
            self._market.watch(PendingStop(client_order_id, order.instrument, order.side, stop_price))
            self._trigger(self._market.reached(client_order_id))

    def _schedule_tick(self) -> None:
        """Step the price paths once price_tick_s from now; the caller holds the lock."""
        generation = self._generation
        due = self._scheduler.now() + self._config.price_tick_s
        self._scheduler.call_at(due, lambda: self._tick(generation))

    def _tick(self, generation: int) -> None:
        with self._lock:
            # A reset started a chain of ticks of its own.
            if generation != self._generation:
                return
            self._market.step(self._price_rng, self._config.price_step_bps)
            self._trigger(self._market.reached())
            self._schedule_tick()

    def _trigger(self, triggered: Sequence[tuple[PendingStop, Decimal]]) -> None:
        """Work each triggered stop as the market or limit order it became; the caller holds the lock."""
        for stop, price in triggered:
            record = self._orders.get(stop.client_order_id)
            if record is None or record.order is None or (record.execution is not None and record.execution.done):
                continue
            record.trigger_price = price
            # What is left to work: all of it, but for a replacement the fills it carried over.
            left = record.order.quantity - (0 if record.execution is None else record.execution.cum_qty)
            worked = dataclasses.replace(record.order, type=TRIGGERED_TYPE[record.order.type], quantity=left)
            lifetime = lifetime_of(worked, self._config, record.expiry, datetime.datetime.now(datetime.UTC))
            self._schedule(worked, plan_triggered(worked, self._config, self._engine_rng, lifetime, price))

    def price(self, instrument: str) -> dict[str, Any]:
        """An instrument's current price on its path, and the reference price the path started from."""
        with self._lock:
            return self._price_view(instrument, [])

    def set_price(self, instrument: str, price: Decimal) -> dict[str, Any]:
        """Set an instrument's current price (the path walks on from it) and trigger the stops it reaches."""
        with self._lock:
            self._market.set_price(instrument, price)
            triggered = self._market.reached()
            self._trigger(triggered)
            return self._price_view(instrument, [stop.client_order_id for stop, _ in triggered])

    def _price_view(self, instrument: str, triggered: list[str]) -> dict[str, Any]:
        return {
            "instrument": instrument,
            "price": str(self._market.price(instrument)),
            "reference_price": str(reference_price(instrument)),
            "triggered": triggered,
        }

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
        transact_time = utc_timestamp()
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
            "transact_time": transact_time,
        }
        execution.transact_time = transact_time
        if execution.done:
            self._market.forget(client_order_id)
        # Two draws per report whatever the rates, for the same reason as in submit.
        duplicate = self._feed_rng.random() < self._config.feed_duplicate_rate
        reorder = self._feed_rng.random() < self._config.feed_reorder_rate
        # A stream of its own, so that losing reports leaves the other draws as they were.
        if self._feed_loss_rng.random() < self._config.feed_loss_rate:
            # Lost for good: the order moved on at the exchange (the status query shows it),
            # but the report never gets a seq, so no replay can bring it back.
            execution.lost_exec_ids.append(exec_id)
            record.lost_reports += 1
            self._counts["lost_reports"] += 1
            return
        execution.exec_ids.append(exec_id)
        # Under the lock, so that seq order is the order in which the reports happened.
        self.feed_log.append(report, duplicate=duplicate, reorder=reorder)

    def cancel(self, client_order_id: str) -> CancelDecision:
        """Decide one cancel attempt; the check that the order is live and its ending are one step."""
        with self._lock:
            self._counts["cancel_requests"] += 1
            # A stream of its own, one draw per attempt: cancels must not shift the seeded
            # failure pattern of order entry, nor the engine's plans.
            failed = self._cancel_rng.random() < self._config.failure_rate
            record = self._orders.get(client_order_id)
            if record is not None:
                record.cancel_requests += 1
            if failed:
                # As for order entry: the request never reached the matching engine.
                self._counts["cancel_failures"] += 1
                if record is not None:
                    record.cancel_failures += 1
                return CancelDecision(CancelOutcome.FAILED)
            # A record without an exchange order id is one whose every entry attempt failed.
            if record is None or record.exchange_order_id is None or record.order is None:
                self._counts["cancels_unknown"] += 1
                return CancelDecision(CancelOutcome.UNKNOWN)
            execution = record.execution
            if execution is not None and execution.done:
                self._counts["cancels_too_late"] += 1
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
            self._counts["canceled_by_request"] += 1
            record.canceled_by_request += 1
            return CancelDecision(CancelOutcome.CANCELED, record.exchange_order_id)

    def status(self, client_order_id: str) -> StatusDecision:
        """Answer one order status query: the order as the exchange holds it, every execution counted."""
        with self._lock:
            self._counts["status_requests"] += 1
            # One draw per query, from a stream of its own, as for cancels.
            failed = self._status_rng.random() < self._config.status_failure_rate
            record = self._orders.get(client_order_id)
            if record is not None:
                record.status_requests += 1
            if failed:
                self._counts["status_failures"] += 1
                if record is not None:
                    record.status_failures += 1
                return StatusDecision(StatusOutcome.FAILED)
            # A record without an order is one whose every entry attempt failed: never accepted.
            if record is None or record.exchange_order_id is None or record.order is None:
                self._counts["status_unknown"] += 1
                return StatusDecision(StatusOutcome.UNKNOWN)
            # Accepted but not acknowledged on the feed yet is `new` all the same: the
            # exchange holds the order, and told the client so in its 201.
            execution = record.execution or Execution(record.order.quantity)
            avg_price = execution.avg_price()
            answer = {
                "client_order_id": client_order_id,
                "exchange_order_id": record.exchange_order_id,
                "status": execution.status,
                "cum_qty": execution.cum_qty,
                "leaves_qty": execution.leaves_qty,
                # A JSON number here, as FIX's AvgPx; four decimals survive a float exactly enough.
                "avg_price": None if avg_price is None else float(avg_price),
                "transact_time": execution.transact_time or record.accepted_at,
            }
            return StatusDecision(StatusOutcome.KNOWN, answer)

    def order_view(self, client_order_id: str) -> dict[str, Any] | None:
        """The test-only full record of one client order id (counters, order, execution), or None if never seen."""
        with self._lock:
            record = self._orders.get(client_order_id)
            if record is None:
                return None
            execution = record.execution
            return {
                "client_order_id": client_order_id,
                "exchange_order_id": record.exchange_order_id,
                **record.counters(),
                "order": None if record.order is None else record.order.to_json(),
                "execution": None if execution is None else execution.to_json(),
                # A stop order's trigger: the price that reached its stop price; null until then.
                "trigger_price": None if record.trigger_price is None else str(record.trigger_price),
                # Executions the exchange made whose reports the feed lost: in `execution`'s
                # status and quantities, but not in its exec_ids, and never on the feed.
                "lost_exec_ids": [] if execution is None else list(execution.lost_exec_ids),
                # Cancel/replace: the order this one replaced, and the one that replaced it; null if none.
                "orig_client_order_id": record.orig_client_order_id,
                "replaced_by": record.replaced_by,
            }

    def stats(self) -> dict[str, Any]:
        """Totals over order entry, cancel, replace and status requests and the faults made, since start or reset."""
        with self._lock:
            return {
                "requests": self._requests,
                "accepted": self._accepted,
                "duplicates_rejected": self._duplicates_rejected,
                "failures": self._failures,
                **self._counts,
                "orders": {order_id: record.counters() for order_id, record in self._orders.items()},
                "feed_seq": self.feed_log.last_seq,
            }
