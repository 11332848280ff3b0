"""The chaos scenarios, each on a stack of its own, and the figures each one reports."""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from chaos.checks import Expectations, Tally, verify_orders
from chaos.harness import (
    ChaosStack,
    FeedObserver,
    Load,
    Monitor,
    Post,
    Progress,
    StackSpec,
    chaos_stack,
    order_bodies,
    order_id_of,
    wait_until_settled,
)

STORE_FAILED = {"message": "Internal server error while placing the order"}
# The authorizer could not read the API keys: refused before the route ran.
AUTH_UNAVAILABLE = {"message": "Authentication is temporarily unavailable, retry later"}
# What a POST refused because storage is unreachable may answer: 503 when the
# outage already stops the authorizer's key lookup, 500 when it strikes
# between that lookup and the order's write. Either way nothing happened.
REFUSALS = ((500, STORE_FAILED), (503, AUTH_UNAVAILABLE))
POST_RETRY_PAUSE_S = 0.2
DUPLICATE_POST_RETRIES = 3

# Settings every scenario starts from. A short backoff base and exchange latency keep
# retries and placement within seconds; the exchange works orders for 5-15 minutes
# (exec_delay 600 s), i.e. sends no execution reports during a run, unless a scenario
# is about executions: the placement scenarios then load moto with placement alone.
MAX_ATTEMPTS = 3
BASE_SETTINGS = {
    "EXCHANGE_LATENCY_S": "0.05",
    "EXCHANGE_FAILURE_RATE": "0",
    "EXCHANGE_EXEC_DELAY_S": "600",
    "EXCHANGE_LIMIT_TTL_S": "1",
    "PLACEMENT_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "PLACEMENT_BACKOFF_BASE_S": "1",
    "PENDING_SWEEP_AFTER_S": "30",
    "FEED_LINGER_S": "0.05",
}
# Executions flowing: each step of an order 0.15-0.45 s apart, limit orders expire after 1 s.
EXECUTIONS_FLOWING = {"EXCHANGE_EXEC_DELAY_S": "0.3"}


# --- Configuration: the same code at two sizes ---


@dataclass(frozen=True)
class ExchangeFailures:
    """Sizes of the exchange-failures scenario."""

    orders: int = 2_000
    failure_rate: float = 0.3
    max_attempts: int = MAX_ATTEMPTS
    max_rate: float = 40.0  # POSTs per second at most
    max_queue_depth: int = 150  # moto's SQS slows down with depth: hold POSTs back above this
    runner_concurrency: int = 4
    load_timeout_s: float = 900.0
    drain_timeout_s: float = 300.0


@dataclass(frozen=True)
class RunnerKills:
    """Sizes of the runner-kills scenario."""

    orders: int = 600
    kills: int = 8
    kill_gap_s: tuple[float, float] = (3.0, 7.0)  # between one restart and the next kill
    down_s: tuple[float, float] = (0.2, 2.0)  # between a kill and the restart
    failure_rate: float = 0.1
    max_rate: float = 12.0
    max_queue_depth: int = 150
    runner_concurrency: int = 4
    # A message received by a killed runner comes back after this; the template's 60 s
    # would make most of the run waiting.
    visibility_timeout_s: int = 10
    load_timeout_s: float = 600.0
    drain_timeout_s: float = 300.0


@dataclass(frozen=True)
class EmulatorOutage:
    """Sizes of the emulator-outage scenario."""

    orders_before: int = 300  # acknowledged before the outage begins
    orders: int = 600  # POSTs in all, before, during and after the outage
    outage_s: float = 20.0
    max_rate: float = 10.0
    max_queue_depth: int = 150
    runner_concurrency: int = 4
    visibility_timeout_s: int = 10
    load_timeout_s: float = 600.0
    drain_timeout_s: float = 300.0


@dataclass(frozen=True)
class FeedChaos:
    """Sizes of the feed-chaos scenario."""

    orders: int = 400
    duplicate_rate: float = 0.3
    reorder_rate: float = 0.3
    reject_rate: float = 0.05
    cancel_rate: float = 0.1
    bridge_kills: int = 5
    kill_gap_s: tuple[float, float] = (3.0, 6.0)
    down_s: tuple[float, float] = (0.5, 2.0)
    max_rate: float = 10.0
    max_queue_depth: int = 150
    runner_concurrency: int = 4
    load_timeout_s: float = 600.0
    drain_timeout_s: float = 300.0


@dataclass(frozen=True)
class DuplicatePosts:
    """Sizes of the duplicate-posts scenario."""

    keys: int = 100
    threads: int = 50  # concurrent POSTs of one key, released together
    runner_concurrency: int = 2
    drain_timeout_s: float = 120.0


@dataclass(frozen=True)
class ChaosConfig:
    """Every number the scenarios depend on: FULL for `make chaos`, SMALL for `make test`."""

    failures: ExchangeFailures = field(default_factory=ExchangeFailures)
    kills: RunnerKills = field(default_factory=RunnerKills)
    outage: EmulatorOutage = field(default_factory=EmulatorOutage)
    feed: FeedChaos = field(default_factory=FeedChaos)
    duplicates: DuplicatePosts = field(default_factory=DuplicatePosts)


FULL = ChaosConfig()
# `make test`: every scenario and every check, with numbers that run in well under two minutes.
SMALL = ChaosConfig(
    failures=ExchangeFailures(orders=60, max_rate=30.0, runner_concurrency=2, drain_timeout_s=60.0),
    kills=RunnerKills(
        orders=50,
        kills=2,
        kill_gap_s=(1.5, 3.0),
        down_s=(0.2, 0.8),
        max_rate=10.0,
        visibility_timeout_s=5,
        runner_concurrency=2,
        drain_timeout_s=60.0,
    ),
    outage=EmulatorOutage(
        orders_before=20,
        orders=45,
        outage_s=3.0,
        max_rate=10.0,
        visibility_timeout_s=5,
        runner_concurrency=2,
        drain_timeout_s=60.0,
    ),
    feed=FeedChaos(
        orders=40,
        bridge_kills=2,
        kill_gap_s=(1.0, 2.0),
        down_s=(0.3, 1.0),
        max_rate=15.0,
        runner_concurrency=2,
        drain_timeout_s=60.0,
    ),
    duplicates=DuplicatePosts(keys=6, threads=50, drain_timeout_s=60.0),
)


# --- Results ---


@dataclass
class Result:
    """What one scenario did and found; lost, duplicated, stuck and mismatched hold one line per finding."""

    scenario: str
    orders: int
    faults: str
    drain_s: float | None
    run_s: float
    outcome: str
    seed: int
    log_path: Path
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.stuck or self.mismatched)

    def add(self, tally: Tally) -> None:
        self.lost += tally.lost
        self.duplicated += tally.duplicated
        self.stuck += tally.stuck
        self.mismatched += tally.mismatched

    def problems(self) -> list[str]:
        return [
            *(f"lost: {line}" for line in self.lost),
            *(f"duplicated: {line}" for line in self.duplicated),
            *(f"stuck: {line}" for line in self.stuck),
            *(f"mismatched: {line}" for line in self.mismatched),
        ]


@dataclass(frozen=True)
class RunContext:
    """What every scenario of one run shares."""

    seed: int
    log_dir: Path
    stream: TextIO | None = None  # progress; stderr by default


def _statuses(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{status} {count:,}" for status, count in sorted(counter.items(), key=lambda kv: -kv[1]))


def _acknowledged(posts: Sequence[Post]) -> list[str]:
    return [post.order_id for post in posts if post.acknowledged]


def _background(target: Callable[[], object], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def _spec(name: str, ctx: RunContext, settings: Mapping[str, str], **options: Any) -> StackSpec:
    # Each scenario has a moto of its own; the prefix names its resources and its log after it.
    return StackSpec(
        name=name,
        settings={**BASE_SETTINGS, "EXCHANGE_SEED": str(ctx.seed), **settings},
        log_dir=ctx.log_dir,
        **options,
    )


def _key_prefix(rng: random.Random) -> str:
    return f"chaos-{rng.getrandbits(32):08x}"


# --- 1. The exchange fails 30% of calls ---


def exchange_failures(cfg: ExchangeFailures, ctx: RunContext) -> Result:
    """Many orders while the exchange fails a share of calls: placed once, or failed after every attempt."""
    name = "exchange-failures"
    rng = random.Random(ctx.seed)
    spec = _spec(
        name,
        ctx,
        {"EXCHANGE_FAILURE_RATE": str(cfg.failure_rate), "PLACEMENT_MAX_ATTEMPTS": str(cfg.max_attempts)},
        runner_concurrency=cfg.runner_concurrency,
    )
    with Progress(name, ctx.stream) as progress:
        with chaos_stack(spec) as chaos, Monitor(chaos, progress) as monitor:
            progress.note(f"stack up; {cfg.orders:,} orders, exchange failure rate {cfg.failure_rate:.0%}")
            load = Load(
                chaos.api,
                progress,
                max_rate=cfg.max_rate,
                depth=lambda: monitor.depth,
                max_depth=cfg.max_queue_depth,
            )
            posts = load.run(order_bodies(rng, cfg.orders, _key_prefix(rng)), cfg.load_timeout_s)
            acked = _acknowledged(posts)
            progress.note(f"load done: {len(acked):,} acknowledged; draining")
            drain_s, _ = wait_until_settled(chaos, acked, cfg.drain_timeout_s, progress)
            tally = verify_orders(
                chaos.api, chaos.exchange, acked, Expectations(cfg.max_attempts, failed_exhausted_attempts=True)
            )
            stats = chaos.exchange.stats()
        result = Result(
            scenario=name,
            orders=len(acked),
            faults=(
                f"exchange failed {stats['failures']:,} of {stats['requests']:,} placement calls "
                f"({stats['failures'] / max(stats['requests'], 1):.0%})"
            ),
            drain_s=drain_s,
            run_s=progress.elapsed(),
            outcome=_statuses(tally.statuses),
            seed=ctx.seed,
            log_path=chaos.log_path,
            details={"post_statuses": dict(load.stats.statuses), "exchange": _totals(stats)},
        )
        result.add(tally)
        _unacknowledged(result, posts)
    return result


def _totals(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {key: stats[key] for key in ("requests", "accepted", "duplicates_rejected", "failures")}


def _unacknowledged(result: Result, posts: Sequence[Post]) -> None:
    # Outside an injected outage every POST must be acknowledged (after retries with the same
    # key). One that is not is no lost order, the client knows, but the API failed it.
    for post in posts:
        if not post.acknowledged:
            result.mismatched.append(
                f"{post.order_id} (key {post.body['client_order_id']}) not acknowledged after {post.tries} tries: "
                f"{post.status} {post.answer}"
            )


# --- 2. The runner killed with SIGKILL, several times ---


def runner_kills(cfg: RunnerKills, ctx: RunContext) -> Result:
    """SIGKILL the Lambda runner at random moments while orders are placed and executions applied."""
    name = "runner-kills"
    rng = random.Random(ctx.seed)
    spec = _spec(
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
            load = Load(
                chaos.api,
                progress,
                max_rate=cfg.max_rate,
                depth=lambda: monitor.depth,
                max_depth=cfg.max_queue_depth,
            )
            bodies = order_bodies(rng, cfg.orders, _key_prefix(rng))
            posts: list[Post] = []
            loading = _background(lambda: posts.extend(load.run(bodies, cfg.load_timeout_s)), "chaos-load")
            for kill in range(1, cfg.kills + 1):
                time.sleep(rng.uniform(*cfg.kill_gap_s))
                _, in_flight = chaos.queue_depth()
                chaos.kill_runner()
                in_flight_at_kills.append(in_flight)
                progress.note(f"SIGKILL runner ({kill}/{cfg.kills}), {in_flight} messages in flight")
                time.sleep(rng.uniform(*cfg.down_s))
                chaos.start_runner()
            loading.join()
            acked = _acknowledged(posts)
            progress.note(f"load done: {len(acked):,} acknowledged; draining")
            drain_s, _ = wait_until_settled(chaos, acked, cfg.drain_timeout_s, progress, executions=True)
            tally = verify_orders(chaos.api, chaos.exchange, acked, Expectations(MAX_ATTEMPTS, executions=True))
            stats = chaos.exchange.stats()
        result = Result(
            scenario=name,
            orders=len(acked),
            faults=(
                f"{cfg.kills} SIGKILLs of the runner ({sum(in_flight_at_kills)} messages in flight at the kills); "
                f"exchange failed {stats['failures']:,} of {stats['requests']:,} calls"
            ),
            drain_s=drain_s,
            run_s=progress.elapsed(),
            outcome=_statuses(tally.statuses),
            seed=ctx.seed,
            log_path=chaos.log_path,
            details={"in_flight_at_kills": in_flight_at_kills, "exchange": _totals(stats)},
        )
        result.add(tally)
        _unacknowledged(result, posts)
    return result


# --- 3. The AWS emulator unreachable for a while ---


def emulator_outage(cfg: EmulatorOutage, ctx: RunContext) -> Result:
    """Cut every connection to moto for a while: POSTs meanwhile get an exact 500/503, the rest is placed after."""
    name = "emulator-outage"
    rng = random.Random(ctx.seed)
    spec = _spec(
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
            load = Load(
                chaos.api,
                progress,
                max_rate=cfg.max_rate,
                depth=lambda: monitor.depth,
                max_depth=cfg.max_queue_depth,
                retries=0,
            )
            bodies = order_bodies(rng, cfg.orders, _key_prefix(rng))
            posts: list[Post] = []
            loading = _background(lambda: posts.extend(load.run(bodies, cfg.load_timeout_s)), "chaos-load")
            deadline = time.monotonic() + cfg.load_timeout_s
            while load.stats.acknowledged < cfg.orders_before and loading.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            outage_begins = time.monotonic()
            chaos.proxy.cut()
            cut_done = time.monotonic()
            progress.note(f"emulator unreachable ({load.stats.acknowledged} orders acknowledged so far)")
            time.sleep(cfg.outage_s)
            outage_ends = time.monotonic()
            chaos.proxy.restore()
            progress.note(f"emulator back; {chaos.proxy.resets} connections were reset")
            # Recovery: how long until what was acknowledged before the outage is placed,
            # measured while the load goes on, as it would in production.
            before_ids = [p.order_id for p in load.answered() if p.acknowledged and p.ended <= outage_begins]
            recovery_s, unrecovered = wait_until_settled(chaos, before_ids, cfg.drain_timeout_s, progress)
            progress.note(
                f"the {len(before_ids)} orders acknowledged before the outage settled {recovery_s:.1f} s after it"
            )
            loading.join()
            acked = _acknowledged(posts)
            progress.note(f"load done: {len(acked):,} acknowledged; draining")
            drain_s, _ = wait_until_settled(chaos, acked, cfg.drain_timeout_s, progress)
            tally = verify_orders(chaos.api, chaos.exchange, acked, Expectations(MAX_ATTEMPTS))
            during = [p for p in posts if p.started >= cut_done and p.ended <= outage_ends]
            refused = [p for p in posts if not p.acknowledged]
            result = Result(
                scenario=name,
                orders=len(acked),
                faults=(
                    f"AWS emulator unreachable for {outage_ends - outage_begins:.0f} s "
                    f"({chaos.proxy.resets:,} connections reset); {len(during)} POSTs during it; the "
                    f"{len(before_ids)} orders acknowledged before it "
                    + (
                        f"all settled {recovery_s:.1f} s after it"
                        if not unrecovered
                        else f"{len(unrecovered)} not settled"
                    )
                ),
                drain_s=drain_s,
                run_s=0.0,
                outcome=_statuses(tally.statuses),
                seed=ctx.seed,
                log_path=chaos.log_path,
                details={
                    "acknowledged_before_outage": len(before_ids),
                    "recovery_s": recovery_s,
                    "posts_during_outage": len(during),
                    "refused": len(refused),
                    "post_statuses": dict(load.stats.statuses),
                },
            )
            result.add(tally)
            _check_outage_answers(result, chaos, during, refused)
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
    spec = _spec(name, ctx, settings, runner_concurrency=cfg.runner_concurrency)
    with Progress(name, ctx.stream) as progress:
        with (
            chaos_stack(spec) as chaos,
            Monitor(chaos, progress) as monitor,
            FeedObserver(chaos.stack.feed_url) as observer,
        ):
            progress.note(f"stack up; {cfg.orders:,} orders, {cfg.bridge_kills} bridge kills")
            load = Load(
                chaos.api,
                progress,
                max_rate=cfg.max_rate,
                depth=lambda: monitor.depth,
                max_depth=cfg.max_queue_depth,
            )
            bodies = order_bodies(rng, cfg.orders, _key_prefix(rng))
            posts: list[Post] = []
            loading = _background(lambda: posts.extend(load.run(bodies, cfg.load_timeout_s)), "chaos-load")
            for kill in range(1, cfg.bridge_kills + 1):
                time.sleep(rng.uniform(*cfg.kill_gap_s))
                chaos.kill_bridge()
                progress.note(f"SIGKILL bridge ({kill}/{cfg.bridge_kills}) at feed report {observer.reports}")
                time.sleep(rng.uniform(*cfg.down_s))
                chaos.start_bridge()
            loading.join()
            acked = _acknowledged(posts)
            progress.note(f"load done: {len(acked):,} acknowledged; draining")
            drain_s, _ = wait_until_settled(chaos, acked, cfg.drain_timeout_s, progress, executions=True)
            tally = verify_orders(chaos.api, chaos.exchange, acked, Expectations(MAX_ATTEMPTS, executions=True))
        result = Result(
            scenario=name,
            orders=len(acked),
            faults=(
                f"{observer.duplicates:,} duplicated and {observer.out_of_order:,} reordered of "
                f"{observer.reports:,} feed reports; {cfg.bridge_kills} SIGKILLs of the bridge"
            ),
            drain_s=drain_s,
            run_s=progress.elapsed(),
            outcome=_statuses(tally.statuses),
            seed=ctx.seed,
            log_path=chaos.log_path,
            details={
                "feed_reports": observer.reports,
                "duplicated_reports": observer.duplicates,
                "reordered_reports": observer.out_of_order,
                "observer_error": observer.error,
            },
        )
        result.add(tally)
        _unacknowledged(result, posts)
        if observer.error:
            result.mismatched.append(f"feed observer failed, fault counts incomplete: {observer.error}")
    return result


# --- 5. Concurrent duplicate POSTs with one idempotency key ---


def duplicate_posts(cfg: DuplicatePosts, ctx: RunContext) -> Result:
    """For each key, many identical POSTs released at once: one order, created once, placed once."""
    name = "duplicate-posts"
    rng = random.Random(ctx.seed)
    spec = _spec(name, ctx, {}, runner_concurrency=cfg.runner_concurrency)
    answers: Counter[int | None] = Counter()
    retried = 0
    with Progress(name, ctx.stream) as progress:
        with chaos_stack(spec) as chaos, ThreadPoolExecutor(cfg.threads, thread_name_prefix="chaos-dup") as pool:
            progress.note(f"stack up; {cfg.keys} keys x {cfg.threads} concurrent POSTs")
            bodies = order_bodies(rng, cfg.keys, _key_prefix(rng))
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
        result = Result(
            scenario=name,
            orders=cfg.keys,
            faults=(
                f"{cfg.keys} keys x {cfg.threads} concurrent identical POSTs ({sum(answers.values()):,} POSTs, "
                f"{retried} retried after a reset connection)"
            ),
            drain_s=drain_s,
            run_s=progress.elapsed(),
            outcome=_statuses(tally.statuses),
            seed=ctx.seed,
            log_path=chaos.log_path,
            details={"answers": dict(answers), "retried_after_reset": retried},
        )
        result.add(tally)
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
)
SCENARIO_NAMES = tuple(scenario.name for scenario in SCENARIOS)


def run_scenario(name: str, config: ChaosConfig, ctx: RunContext) -> Result:
    scenario = next(s for s in SCENARIOS if s.name == name)
    return scenario.run(config, ctx)


def new_seed() -> int:
    return secrets.randbelow(2**31)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def markdown_table(results: Sequence[Result]) -> str:
    rows = [
        "| scenario | orders | faults injected | lost | duplicated | stuck | mismatched | time to drain | run time "
        "| final statuses |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows += [
        f"| {r.scenario} | {r.orders:,} | {r.faults} | {len(r.lost)} | {len(r.duplicated)} | {len(r.stuck)} "
        f"| {len(r.mismatched)} | {_duration(r.drain_s)} | {_duration(r.run_s)} | {r.outcome} |"
        for r in results
    ]
    return "\n".join(rows)
