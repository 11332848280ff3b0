"""The lost-answers scenario: placement answers and execution reports lost, then every order converges to the exchange.

The simulator accepts a share of placements and drops the answer (the client
sees the connection close); for some orders it drops every answer (503s too),
so every attempt looks failed though one was accepted; and 503s make some
orders whose acceptance went unanswered meet a failure on their last attempt
(the hole of issue 14). The feed loses a share of execution reports for good,
and the order status query is unavailable now and then. Then the faults stop, and the run times how long
until every order agrees with the exchange's record: only the application's
status queries and its reconciler can get it there.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chaos.checks import CHECK_THREADS, PENDING, ExchangeClient, Expectations, Tally, check_convergence, verify_orders
from chaos.config import EXECUTIONS_FLOWING, MAX_ATTEMPTS, LostAnswers, RunContext
from chaos.harness import DRAIN_POLL_S, ChaosStack, Monitor, Progress, chaos_stack, executions_arrived
from chaos.results import Result
from chaos.steps import (
    Drained,
    exchange_totals,
    flag_unacknowledged,
    gated_load,
    scenario_result,
    seeded_order_bodies,
    stack_spec,
)

NAME = "lost-answers"
# Each fault knob of the simulator: its /admin/config key and the environment variable that sets it at start.
KNOB_ENV = {
    "lost_answer_rate": "EXCHANGE_LOST_ANSWER_RATE",
    "lost_answer_order_rate": "EXCHANGE_LOST_ANSWER_ORDER_RATE",
    "feed_loss_rate": "EXCHANGE_FEED_LOSS_RATE",
    "failure_rate": "EXCHANGE_FAILURE_RATE",
    "status_failure_rate": "EXCHANGE_STATUS_FAILURE_RATE",
}
# Findings that may still go away while the application converges; lost and
# duplicated ones never do, so waiting on them would only wait out the deadline.
CONVERGING_KINDS = ("stuck", "mismatched", "failed_but_live")
FAULTS_END_POLL_S = 0.5


def fault_knobs(cfg: LostAnswers) -> dict[str, float]:
    return {
        "lost_answer_rate": cfg.lost_answer_rate,
        "lost_answer_order_rate": cfg.lost_answer_order_rate,
        "feed_loss_rate": cfg.feed_loss_rate,
        "failure_rate": cfg.failure_rate,
        "status_failure_rate": cfg.status_failure_rate,
    }


def require_knobs(exchange: ExchangeClient, knobs: Mapping[str, float]) -> None:
    """Fail the scenario at once if the simulator does not run with its faults: without them it would prove nothing."""
    in_force = exchange.config()
    wrong = {key: in_force.get(key, "absent") for key, value in knobs.items() if in_force.get(key) != value}
    if wrong:
        raise RuntimeError(
            f"the exchange simulator does not run with the scenario's faults: has {wrong}, expected {dict(knobs)} "
            f"(set through {', '.join(KNOB_ENV[key] for key in wrong)})"
        )


@dataclass(frozen=True)
class FaultsEnd:
    """Where placement stood when the faults stopped."""

    after_load_s: float  # how long the faults outlasted the last POST
    unseen: int  # orders the exchange had not seen yet
    pending: int  # orders still pending here: placement attempts or status queries still to come

    def note(self) -> str:
        return (
            f"faults stopped {self.after_load_s:.1f} s after the last POST ({self.unseen} orders not yet seen by "
            f"the exchange, {self.pending} still pending); waiting for convergence"
        )


def faults_until_placed(chaos: ChaosStack, order_ids: Sequence[str], timeout_s: float, progress: Progress) -> FaultsEnd:
    """Keep the faults on until every placement has met them (or timeout_s passed); then where placement stood.

    That is: the exchange has seen every order, and none is pending here any more.
    Not "the orders queue is empty": a delayed message of an order the reconciler
    settled meanwhile stays there for nothing, up to a placement lease.
    """
    started = time.monotonic()
    while True:
        seen = chaos.exchange.stats().get("orders", {})
        unseen = sum(1 for order_id in order_ids if order_id not in seen)
        scan_started = time.monotonic()
        stored = chaos.snapshot()
        scan_s = time.monotonic() - scan_started
        pending = sum(1 for order_id in order_ids if stored.get(order_id, {}).get("status", PENDING) == PENDING)
        progress.set(unseen_by_exchange=unseen, pending=pending)
        waited_s = time.monotonic() - started
        if (not unseen and not pending) or waited_s >= timeout_s:
            return FaultsEnd(waited_s, unseen, pending)
        # As in wait_until_settled: at most a fifth of moto's time goes to watching.
        time.sleep(max(FAULTS_END_POLL_S, 4 * scan_s))


def agrees_with_exchange(chaos: ChaosStack, stored: Mapping[str, Mapping[str, Any]], order_id: str) -> bool:
    """Whether the order as stored agrees with the exchange's record, as far as it still can change."""
    record = chaos.exchange.record(order_id)
    found = check_convergence(order_id, stored.get(order_id), record)
    if any(found[kind] for kind in CONVERGING_KINDS):
        return False
    return executions_arrived(chaos, order_id, record)


def wait_until_converged(
    chaos: ChaosStack, order_ids: Sequence[str], timeout_s: float, progress: Progress
) -> tuple[float, set[str]]:
    """Seconds until every order agrees with the exchange's record (check_convergence), and the ones that do not."""
    started = time.monotonic()
    remaining = set(order_ids)
    with ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="converge") as pool:
        while True:
            scan_started = time.monotonic()
            stored = chaos.snapshot()
            scan_s = time.monotonic() - scan_started
            ids = sorted(remaining)
            verdicts = pool.map(functools.partial(agrees_with_exchange, chaos, stored), ids)
            remaining -= {order_id for order_id, ok in zip(ids, verdicts, strict=True) if ok}
            progress.set(unconverged=len(remaining))
            elapsed = time.monotonic() - started
            if not remaining or elapsed >= timeout_s:
                return elapsed, remaining
            # As in wait_until_settled: at most a fifth of moto's time goes to watching.
            time.sleep(max(DRAIN_POLL_S, 4 * scan_s))


@dataclass(frozen=True)
class Faults:
    """What the simulator counted of the injected faults, from /stats once the run converged."""

    stats: Mapping[str, Any]

    @property
    def lost_answers(self) -> int:
        return int(self.stats.get("lost_answers", 0))

    @property
    def lost_reports(self) -> int:
        return int(self.stats.get("lost_reports", 0))

    @property
    def accepted_unanswered(self) -> int | None:
        """Orders the exchange accepted without any answer telling the client so; None without per-order counts.

        Every answer that would have (the acceptance, each "duplicate") was lost; lost
        answers beyond those are 503s lost too, for an order that loses every answer.
        """
        counters: Iterable[Mapping[str, int]] = self.stats.get("orders", {}).values()
        counted = [c for c in counters if "lost_answers" in c]
        if not counted:
            return None
        return sum(
            1 for c in counted if c["accepted"] and c["lost_answers"] >= c["accepted"] + c["duplicates_rejected"]
        )

    def describe(self, converged_s: float | None, timeout_s: float) -> str:
        unanswered = self.accepted_unanswered
        every = "" if unanswered is None else f" ({unanswered} orders accepted without an answer saying so)"
        ending = (
            f"every order agreed with the exchange {converged_s:.1f} s after the faults stopped"
            if converged_s is not None
            else f"not every order agreed with the exchange {timeout_s:.0f} s after the faults stopped"
        )
        return (
            f"{self.lost_answers:,} of {self.stats['requests']:,} placement answers lost{every}; "
            f"{self.lost_reports:,} execution reports lost for good ({self.stats['feed_seq']:,} carried); "
            f"exchange failed {self.stats['failures']:,} calls; {ending}"
        )

    def details(self) -> dict[str, Any]:
        return {
            "lost_answers": self.lost_answers,
            "lost_reports": self.lost_reports,
            "accepted_unanswered": self.accepted_unanswered,
            "exchange": exchange_totals(self.stats),
        }


def _unconverged_not_flagged(unconverged: set[str], tally: Tally) -> list[str]:
    # Orders that agreed only after the deadline pass the final checks, yet did not converge in time.
    lines = [*tally.lost, *tally.duplicated, *tally.stuck, *tally.mismatched, *tally.failed_but_live]
    return sorted(order_id for order_id in unconverged if not any(order_id in line for line in lines))


def lost_answers(cfg: LostAnswers, ctx: RunContext) -> Result:
    """Answers and reports lost while orders flow; once the faults stop, every order ends as the exchange's record."""
    rng = random.Random(ctx.seed)
    knobs = fault_knobs(cfg)
    settings = {
        **EXECUTIONS_FLOWING,
        **{KNOB_ENV[key]: str(value) for key, value in knobs.items()},
        "PENDING_SWEEP_AFTER_S": str(cfg.pending_sweep_after_s),
    }
    spec = stack_spec(
        NAME, ctx, settings, runner_concurrency=cfg.runner_concurrency, schedule_interval_s=cfg.schedule_interval_s
    )
    with Progress(NAME, ctx.stream) as progress:
        with chaos_stack(spec) as chaos, Monitor(chaos, progress) as monitor:
            require_knobs(chaos.exchange, knobs)
            progress.note(f"stack up; {cfg.orders:,} orders, faults {knobs}")
            posts = gated_load(chaos, progress, monitor, cfg).run(
                seeded_order_bodies(rng, cfg.orders), cfg.load_timeout_s
            )
            acked = [post.order_id for post in posts if post.acknowledged]
            faults_end = faults_until_placed(chaos, acked, cfg.faults_outlast_load_s, progress)
            chaos.exchange.configure(**dict.fromkeys(knobs, 0.0))
            progress.note(faults_end.note())
            converging_s, unconverged = wait_until_converged(chaos, acked, cfg.drain_timeout_s, progress)
            converged_s = None if unconverged else converging_s
            progress.note(
                f"every order agrees with the exchange, {converging_s:.1f} s after the faults stopped"
                if converged_s is not None
                else f"{len(unconverged)} orders do not agree with the exchange {converging_s:.0f} s after the faults"
            )
            # The exec ids the feed carried: an execution lost for good need not be listed.
            expect = Expectations(MAX_ATTEMPTS, executions=True, feed_exec_ids=chaos.exchange.feed_exec_ids())
            tally = verify_orders(chaos.api, chaos.exchange, acked, expect)
            faults = Faults(chaos.exchange.stats())
        details = {
            **faults.details(),
            "convergence_s": converged_s,
            "failed_but_live": len(tally.failed_but_live),
            "faults_end": dataclasses.asdict(faults_end),
        }
        drained = Drained(acked, converging_s, tally)
        result = scenario_result(
            NAME, ctx, progress, chaos.log_path, drained, faults.describe(converged_s, cfg.drain_timeout_s), details
        )
        flag_unacknowledged(result, posts)
        for order_id in _unconverged_not_flagged(unconverged, tally):
            result.stuck.append(
                f"{order_id} did not agree with the exchange {cfg.drain_timeout_s:.0f} s after the faults"
            )
    return result
