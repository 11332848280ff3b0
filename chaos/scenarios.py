"""The chaos scenarios, each on a stack of its own (lost-answers in chaos/lost_answers.py), and their registry."""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chaos.checks import Expectations, verify_orders
from chaos.config import (
    EXECUTIONS_FLOWING,
    MAX_ATTEMPTS,
    ChaosConfig,
    DuplicatePosts,
    EmulatorOutage,
    ExchangeFailures,
    FeedChaos,
    RunContext,
    RunnerKills,
)
from chaos.harness import (
    ChaosStack,
    FeedObserver,
    Monitor,
    Post,
    Progress,
    chaos_stack,
    order_id_of,
    wait_until_settled,
)
from chaos.lost_answers import lost_answers
from chaos.proxy import TcpProxy
from chaos.results import Result
from chaos.steps import (
    Drained,
    LoadInBackground,
    drain_and_verify,
    exchange_totals,
    flag_unacknowledged,
    gated_load,
    load_while_killing,
    scenario_result,
    seeded_order_bodies,
    stack_spec,
    start_load,
)
from chaos.stream_chaos import stream_chaos

STORE_FAILED = {"message": "Internal server error while placing the order"}
# The authorizer could not read the API keys: refused before the route ran.
AUTH_UNAVAILABLE = {"message": "Authentication is temporarily unavailable, retry later"}
# What a POST refused because storage is unreachable may answer: 503 when the
# outage already stops the authorizer's key lookup, 500 when it strikes
# between that lookup and the order's write. Either way nothing happened.
REFUSALS = ((500, STORE_FAILED), (503, AUTH_UNAVAILABLE))
POST_RETRY_PAUSE_S = 0.2
DUPLICATE_POST_RETRIES = 3
# How often the outage scenario looks whether enough orders were acknowledged to begin it.
OUTAGE_START_POLL_S = 0.05


# --- 1. The exchange fails 30% of calls ---


def exchange_failures(cfg: ExchangeFailures, ctx: RunContext) -> Result:
    """Many orders while the exchange fails a share of calls: placed once, or failed after every attempt."""
    name = "exchange-failures"
    rng = random.Random(ctx.seed)
    spec = stack_spec(
        name,
        ctx,
        {"EXCHANGE_FAILURE_RATE": str(cfg.failure_rate), "PLACEMENT_MAX_ATTEMPTS": str(cfg.max_attempts)},
        runner_concurrency=cfg.runner_concurrency,
    )
    with Progress(name, ctx.stream) as progress:
        with chaos_stack(spec) as chaos, Monitor(chaos, progress) as monitor:
            progress.note(f"stack up; {cfg.orders:,} orders, exchange failure rate {cfg.failure_rate:.0%}")
            load = gated_load(chaos, progress, monitor, cfg)
            posts = load.run(seeded_order_bodies(rng, cfg.orders), cfg.load_timeout_s)
            expect = Expectations(cfg.max_attempts, failed_exhausted_attempts=True)
            drained = drain_and_verify(chaos, progress, posts, cfg.drain_timeout_s, expect)
            stats = chaos.exchange.stats()
        faults = (
            f"exchange failed {stats['failures']:,} of {stats['requests']:,} placement calls "
            f"({stats['failures'] / max(stats['requests'], 1):.0%})"
        )
        details = {"post_statuses": dict(load.stats.statuses), "exchange": exchange_totals(stats)}
        result = scenario_result(name, ctx, progress, chaos.log_path, drained, faults, details)
        flag_unacknowledged(result, posts)
    return result


# --- 2. The runner killed with SIGKILL, several times ---


def runner_kills(cfg: RunnerKills, ctx: RunContext) -> Result:
    """SIGKILL the Lambda runner at random moments while orders are placed and executions applied."""
    name = "runner-kills"
    rng = random.Random(ctx.seed)
    spec = stack_spec(
        name,
        ctx,
        {"EXCHANGE_FAILURE_RATE": str(cfg.failure_rate), "PENDING_SWEEP_AFTER_S": "20", **EXECUTIONS_FLOWING},
        runner_concurrency=cfg.runner_concurrency,
        visibility_timeout_s=cfg.visibility_timeout_s,
    )
    in_flight_at_kills: list[int] = []
    with Progress(name, ctx.stream) as progress:
        with chaos_stack(spec) as chaos, Monitor(chaos, progress) as monitor:
            progress.note(f"stack up; {cfg.orders:,} orders, {cfg.kills} runner kills")

            def kill_runner(number: int) -> None:
                _, in_flight = chaos.queue_depth()
                chaos.kill_runner()
                in_flight_at_kills.append(in_flight)
                progress.note(f"SIGKILL runner ({number}/{cfg.kills}), {in_flight} messages in flight")

            posts = load_while_killing(chaos, progress, monitor, rng, cfg, cfg.kills, kill_runner, chaos.start_runner)
            expect = Expectations(MAX_ATTEMPTS, executions=True)
            drained = drain_and_verify(chaos, progress, posts, cfg.drain_timeout_s, expect)
            stats = chaos.exchange.stats()
        faults = (
            f"{cfg.kills} SIGKILLs of the runner ({sum(in_flight_at_kills)} messages in flight at the kills); "
            f"exchange failed {stats['failures']:,} of {stats['requests']:,} calls"
        )
        details = {"in_flight_at_kills": in_flight_at_kills, "exchange": exchange_totals(stats)}
        result = scenario_result(name, ctx, progress, chaos.log_path, drained, faults, details)
        flag_unacknowledged(result, posts)
    return result


# --- 3. The AWS emulator unreachable for a while ---


@dataclass(frozen=True)
class Outage:
    """When the emulator was cut off (time.monotonic()), and how the orders acknowledged before it fared."""

    begins: float
    cut_done: float  # every connection reset: a POST started from here on cannot reach moto
    ends: float
    before_ids: list[str]
    recovery_s: float
    unrecovered: set[str]

    def faults(self, resets: int, posts_during: int) -> str:
        settled = (
            f"all settled {self.recovery_s:.1f} s after it"
            if not self.unrecovered
            else f"{len(self.unrecovered)} not settled"
        )
        return (
            f"AWS emulator unreachable for {self.ends - self.begins:.0f} s ({resets:,} connections reset); "
            f"{posts_during} POSTs during it; the {len(self.before_ids)} orders acknowledged before it {settled}"
        )


def _cut_off_emulator(
    chaos: ChaosStack, proxy: TcpProxy, progress: Progress, loading: LoadInBackground, cfg: EmulatorOutage
) -> Outage:
    """Once orders_before are acknowledged, cut every connection to moto for outage_s; then time the recovery."""
    load = loading.load
    deadline = time.monotonic() + cfg.load_timeout_s
    while load.stats.acknowledged < cfg.orders_before and loading.thread.is_alive() and time.monotonic() < deadline:
        time.sleep(OUTAGE_START_POLL_S)
    begins = time.monotonic()
    proxy.cut()
    cut_done = time.monotonic()
    progress.note(f"emulator unreachable ({load.stats.acknowledged} orders acknowledged so far)")
    time.sleep(cfg.outage_s)
    ends = time.monotonic()
    proxy.restore()
    progress.note(f"emulator back; {proxy.resets} connections were reset")
    # Recovery: how long until what was acknowledged before the outage is placed,
    # measured while the load goes on, as it would in production.
    before_ids = [p.order_id for p in load.answered() if p.acknowledged and p.ended <= begins]
    recovery_s, unrecovered = wait_until_settled(chaos, before_ids, cfg.drain_timeout_s, progress)
    progress.note(f"the {len(before_ids)} orders acknowledged before the outage settled {recovery_s:.1f} s after it")
    return Outage(begins, cut_done, ends, before_ids, recovery_s, unrecovered)


def emulator_outage(cfg: EmulatorOutage, ctx: RunContext) -> Result:
    """Cut every connection to moto for a while: POSTs meanwhile get an exact 500/503, the rest is placed after."""
    name = "emulator-outage"
    rng = random.Random(ctx.seed)
    spec = stack_spec(
        name,
        ctx,
        {"PENDING_SWEEP_AFTER_S": "20"},
        runner_concurrency=cfg.runner_concurrency,
        visibility_timeout_s=cfg.visibility_timeout_s,
        proxy=True,
    )
    with Progress(name, ctx.stream) as progress:
        with chaos_stack(spec) as chaos, Monitor(chaos, progress) as monitor:
            assert chaos.proxy is not None
            progress.note(f"stack up behind the proxy; {cfg.orders:,} POSTs, {cfg.outage_s:.0f} s outage")
            # No retries: each POST's own answer is what is checked, refused ones included.
            loading = start_load(gated_load(chaos, progress, monitor, cfg, retries=0), rng, cfg)
            outage = _cut_off_emulator(chaos, chaos.proxy, progress, loading, cfg)
            posts = loading.join()
            drained = drain_and_verify(chaos, progress, posts, cfg.drain_timeout_s, Expectations(MAX_ATTEMPTS))
            during = [p for p in posts if p.started >= outage.cut_done and p.ended <= outage.ends]
            refused = [p for p in posts if not p.acknowledged]
            details = {
                "acknowledged_before_outage": len(outage.before_ids),
                "recovery_s": outage.recovery_s,
                "posts_during_outage": len(during),
                "refused": len(refused),
                "post_statuses": dict(loading.load.stats.statuses),
            }
            faults = outage.faults(chaos.proxy.resets, len(during))
            result = scenario_result(name, ctx, progress, chaos.log_path, drained, faults, details)
            _check_outage_answers(result, chaos, during, refused)
        # Timed once the stack is down, as every other scenario's run time is.
        result.run_s = progress.elapsed()
    return result


def _check_outage_answers(result: Result, chaos: ChaosStack, during: Sequence[Post], refused: Sequence[Post]) -> None:
    expected = " or ".join(f"{status} {answer}" for status, answer in REFUSALS)
    for post in during:
        if (post.status, post.answer) not in REFUSALS:
            result.mismatched.append(
                f"{post.order_id} POSTed during the outage got {post.status} {post.answer}, not {expected}"
            )
    checked = {id(post) for post in during}
    for post in refused:
        if id(post) not in checked and (post.status, post.answer) not in REFUSALS:
            result.mismatched.append(f"{post.order_id} refused with {post.status} {post.answer}, not {expected}")
        # Refused means nothing happened: not stored, not readable, never at the exchange.
        traces = [
            what
            for what, there in (
                ("stored in the table", chaos.stored(post.order_id)),
                ("readable over the API", chaos.api.order(post.order_id) is not None),
                ("known to the exchange", chaos.exchange.record(post.order_id) is not None),
            )
            if there
        ]
        if traces:
            result.mismatched.append(f"{post.order_id} refused with {post.status}, yet {', '.join(traces)}")


# --- 4. Duplicated and reordered execution reports, the bridge killed mid-stream ---


def feed_chaos(cfg: FeedChaos, ctx: RunContext) -> Result:
    """A feed that repeats and reorders reports, and a bridge SIGKILLed mid-stream: final state as the exchange's."""
    name = "feed-chaos"
    rng = random.Random(ctx.seed)
    settings = {
        **EXECUTIONS_FLOWING,
        "EXCHANGE_FEED_DUPLICATE_RATE": str(cfg.duplicate_rate),
        "EXCHANGE_FEED_REORDER_RATE": str(cfg.reorder_rate),
        "EXCHANGE_REJECT_RATE": str(cfg.reject_rate),
        "EXCHANGE_CANCEL_RATE": str(cfg.cancel_rate),
    }
    spec = stack_spec(name, ctx, settings, runner_concurrency=cfg.runner_concurrency)
    with Progress(name, ctx.stream) as progress:
        with (
            chaos_stack(spec) as chaos,
            Monitor(chaos, progress) as monitor,
            FeedObserver(chaos.stack.feed_url, chaos.stack.exchange_credential) as observer,
        ):
            progress.note(f"stack up; {cfg.orders:,} orders, {cfg.bridge_kills} bridge kills")

            def kill_bridge(number: int) -> None:
                chaos.kill_bridge()
                progress.note(f"SIGKILL bridge ({number}/{cfg.bridge_kills}) at feed report {observer.reports}")

            posts = load_while_killing(
                chaos, progress, monitor, rng, cfg, cfg.bridge_kills, kill_bridge, chaos.start_bridge
            )
            expect = Expectations(MAX_ATTEMPTS, executions=True)
            drained = drain_and_verify(chaos, progress, posts, cfg.drain_timeout_s, expect)
        faults = (
            f"{observer.duplicates:,} duplicated and {observer.out_of_order:,} reordered of "
            f"{observer.reports:,} feed reports; {cfg.bridge_kills} SIGKILLs of the bridge"
        )
        details = {
            "feed_reports": observer.reports,
            "duplicated_reports": observer.duplicates,
            "reordered_reports": observer.out_of_order,
            "observer_error": observer.error,
        }
        result = scenario_result(name, ctx, progress, chaos.log_path, drained, faults, details)
        flag_unacknowledged(result, posts)
        if observer.error:
            result.mismatched.append(f"feed observer failed, fault counts incomplete: {observer.error}")
    return result


# --- 5. Concurrent duplicate POSTs with one idempotency key ---


def duplicate_posts(cfg: DuplicatePosts, ctx: RunContext) -> Result:
    """For each key, many identical POSTs released at once: one order, created once, placed once."""
    name = "duplicate-posts"
    rng = random.Random(ctx.seed)
    spec = stack_spec(name, ctx, {}, runner_concurrency=cfg.runner_concurrency)
    answers: Counter[int | None] = Counter()
    retried = 0
    with Progress(name, ctx.stream) as progress:
        with chaos_stack(spec) as chaos, ThreadPoolExecutor(cfg.threads, thread_name_prefix="chaos-dup") as pool:
            progress.note(f"stack up; {cfg.keys} keys x {cfg.threads} concurrent POSTs")
            bodies = seeded_order_bodies(rng, cfg.keys)
            findings: dict[str, list[str]] = {"lost": [], "duplicated": [], "mismatched": []}
            for index, body in enumerate(bodies, start=1):
                posts = _post_together(chaos, pool, body, cfg.threads)
                answers.update(post.status for post in posts)
                retried += sum(post.tries - 1 for post in posts)
                for kind, lines in _one_order_per_key(body, posts).items():
                    findings[kind] += lines
                progress.set(keys=f"{index}/{cfg.keys}", answers=dict(answers))
            order_ids = [order_id_of(body) for body in bodies]
            drain_s, _ = wait_until_settled(chaos, order_ids, cfg.drain_timeout_s, progress)
            tally = verify_orders(chaos.api, chaos.exchange, order_ids, Expectations(MAX_ATTEMPTS))
            stored = Counter(order["client_order_id"] for order in chaos.snapshot().values())
        faults = (
            f"{cfg.keys} keys x {cfg.threads} concurrent identical POSTs ({sum(answers.values()):,} POSTs, "
            f"{retried} retried after a reset connection)"
        )
        details = {"answers": dict(answers), "retried_after_reset": retried}
        result = scenario_result(
            name, ctx, progress, chaos.log_path, Drained(order_ids, drain_s, tally), faults, details
        )
        result.lost += findings["lost"]
        result.duplicated += findings["duplicated"]
        result.mismatched += findings["mismatched"]
        for body in bodies:
            key = str(body["client_order_id"])
            if stored[key] > 1:
                result.duplicated.append(f"key {key} has {stored[key]} stored orders")
            elif stored[key] == 0:
                result.lost.append(f"key {key} has no stored order")
    return result


def _post_together(chaos: ChaosStack, pool: ThreadPoolExecutor, body: Mapping[str, Any], threads: int) -> list[Post]:
    # A barrier releases every POST at once: the point is the race between them.
    barrier = threading.Barrier(threads, timeout=60)

    def one(_: int) -> Post:
        barrier.wait()
        tries = 0
        while True:
            tries += 1
            started = time.monotonic()
            try:
                response = chaos.api.post(body)
                status: int | None = response.status_code
                answer: Any = response.json()
            except (OSError, ValueError) as exc:
                status, answer = None, f"{type(exc).__name__}: {exc}"
            # chalice local listens with a backlog of 5, so some of 50 simultaneous
            # connections are reset before any request is read. A client retries those,
            # as it may: the idempotency key is there for exactly that.
            if status is not None or tries > DUPLICATE_POST_RETRIES:
                return Post(body, status, answer, started, time.monotonic(), tries)
            time.sleep(POST_RETRY_PAUSE_S)

    return list(pool.map(one, range(threads)))


def _one_order_per_key(body: Mapping[str, Any], posts: Sequence[Post]) -> dict[str, list[str]]:
    key = str(body["client_order_id"])
    expected_id = order_id_of(body)
    statuses = Counter(post.status for post in posts)
    ids = Counter(post.answer.get("id") for post in posts if isinstance(post.answer, dict) and post.acknowledged)
    found: dict[str, list[str]] = {"lost": [], "duplicated": [], "mismatched": []}
    if statuses[201] > 1 or len(ids) > 1:
        found["duplicated"].append(f"key {key}: {statuses[201]} answers 201, order ids {dict(ids)}")
    if not ids:
        found["lost"].append(f"key {key}: no POST acknowledged (answers {dict(statuses)})")
    elif statuses[201] == 0 and statuses[None] == 0:
        # Without a lost connection, one of the POSTs must have been the one that created it.
        found["mismatched"].append(f"key {key}: no POST answered 201 (answers {dict(statuses)})")
    if set(ids) - {expected_id}:
        found["mismatched"].append(f"key {key}: order ids {sorted(map(str, ids))}, expected {expected_id}")
    others = {status: count for status, count in statuses.items() if status not in (200, 201)}
    if others:
        answers = sorted({str(post.answer) for post in posts if not post.acknowledged})
        found["mismatched"].append(f"key {key}: answers other than 200/201: {others} {answers[:3]}")
    return found


# --- Running them ---


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[ChaosConfig, RunContext], Result]
    summary: str


SCENARIOS = (
    Scenario(
        "exchange-failures",
        lambda config, ctx: exchange_failures(config.failures, ctx),
        "the exchange fails 30% of placement calls",
    ),
    Scenario(
        "runner-kills",
        lambda config, ctx: runner_kills(config.kills, ctx),
        "the Lambda runner SIGKILLed at random moments and restarted",
    ),
    Scenario(
        "emulator-outage",
        lambda config, ctx: emulator_outage(config.outage, ctx),
        "the AWS emulator unreachable for a while",
    ),
    Scenario(
        "feed-chaos",
        lambda config, ctx: feed_chaos(config.feed, ctx),
        "duplicated and reordered execution reports, the feed bridge SIGKILLed mid-stream",
    ),
    Scenario(
        "duplicate-posts",
        lambda config, ctx: duplicate_posts(config.duplicates, ctx),
        "concurrent duplicate POSTs with one idempotency key",
    ),
    Scenario(
        "lost-answers",
        lambda config, ctx: lost_answers(config.lost_answers, ctx),
        "answers to placements lost, on every attempt for some orders; execution reports lost for good",
    ),
    Scenario(
        "stream-chaos",
        lambda config, ctx: stream_chaos(config.stream, ctx),
        "order stream clients dropped and reconnecting with their cursor; a duplicating, reordering feed; "
        "the runner SIGKILLed",
    ),
)
SCENARIO_NAMES = tuple(scenario.name for scenario in SCENARIOS)


def run_scenario(name: str, config: ChaosConfig, ctx: RunContext) -> Result:
    scenario = next(s for s in SCENARIOS if s.name == name)
    return scenario.run(config, ctx)


def new_seed() -> int:
    return secrets.randbelow(2**31)
