"""The steps the chaos scenarios are built from: stack spec, gated load, repeated kills, drain and checks, result."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.checks import Expectations, Tally, verify_orders
from chaos.config import BASE_SETTINGS, KillSizes, LoadSizes, RunContext
from chaos.harness import ChaosStack, Load, Monitor, Post, Progress, StackSpec, order_bodies, wait_until_settled
from chaos.results import Result, status_counts


def stack_spec(name: str, ctx: RunContext, settings: Mapping[str, str], **options: Any) -> StackSpec:
    # Each scenario has a moto of its own; the prefix names its resources and its log after it.
    return StackSpec(
        name=name,
        settings={**BASE_SETTINGS, "EXCHANGE_SEED": str(ctx.seed), **settings},
        log_dir=ctx.log_dir,
        **options,
    )


def seeded_order_bodies(rng: random.Random, count: int) -> list[dict[str, Any]]:
    # The key prefix is drawn first, then the orders: one seed, the same keys and orders.
    return order_bodies(rng, count, f"chaos-{rng.getrandbits(32):08x}")


def gated_load(chaos: ChaosStack, progress: Progress, monitor: Monitor, cfg: LoadSizes, **options: Any) -> Load:
    """A load at the scenario's rate that holds POSTs back while the orders queue is at its depth limit."""
    return Load(
        chaos.api,
        progress,
        max_rate=cfg.max_rate,
        depth=lambda: monitor.depth,
        max_depth=cfg.max_queue_depth,
        **options,
    )


@dataclass(frozen=True)
class LoadInBackground:
    """A load on a thread of its own, so that the scenario can inject its faults meanwhile."""

    load: Load
    posts: list[Post]  # every POST's answer, once the load is done
    thread: threading.Thread

    def join(self) -> list[Post]:
        self.thread.join()
        return self.posts


def start_load(load: Load, rng: random.Random, cfg: LoadSizes) -> LoadInBackground:
    bodies = seeded_order_bodies(rng, cfg.orders)
    posts: list[Post] = []
    thread = threading.Thread(
        target=lambda: posts.extend(load.run(bodies, cfg.load_timeout_s)), name="chaos-load", daemon=True
    )
    thread.start()
    return LoadInBackground(load, posts, thread)


def load_while_killing(
    chaos: ChaosStack,
    progress: Progress,
    monitor: Monitor,
    rng: random.Random,
    cfg: KillSizes,
    kills: int,
    kill: Callable[[int], None],
    restart: Callable[[], None],
) -> list[Post]:
    """POST the scenario's orders while `kill` (given the kill's number, from 1) and `restart` take turns."""
    loading = start_load(gated_load(chaos, progress, monitor, cfg), rng, cfg)
    for number in range(1, kills + 1):
        time.sleep(rng.uniform(*cfg.kill_gap_s))
        kill(number)
        time.sleep(rng.uniform(*cfg.down_s))
        restart()
    return loading.join()


@dataclass(frozen=True)
class Drained:
    """The orders a scenario checks, the seconds until they settled, and what the checks found."""

    order_ids: list[str]
    drain_s: float
    tally: Tally


def drain_and_verify(
    chaos: ChaosStack, progress: Progress, posts: Sequence[Post], timeout_s: float, expect: Expectations
) -> Drained:
    """Wait until every acknowledged order has settled (or timeout_s passed), then check each of them."""
    acked = [post.order_id for post in posts if post.acknowledged]
    progress.note(f"load done: {len(acked):,} acknowledged; draining")
    drain_s, _ = wait_until_settled(chaos, acked, timeout_s, progress, executions=expect.executions)
    return Drained(acked, drain_s, verify_orders(chaos.api, chaos.exchange, acked, expect))


def scenario_result(
    name: str,
    ctx: RunContext,
    progress: Progress,
    log_path: Path,
    drained: Drained,
    faults: str,
    details: dict[str, Any],
) -> Result:
    """The figures of a scenario and the checks' findings; its run time is the time so far."""
    result = Result(
        scenario=name,
        orders=len(drained.order_ids),
        faults=faults,
        drain_s=drained.drain_s,
        run_s=progress.elapsed(),
        outcome=status_counts(drained.tally.statuses),
        seed=ctx.seed,
        log_path=log_path,
        details=details,
    )
    result.add(drained.tally)
    return result


def flag_unacknowledged(result: Result, posts: Sequence[Post]) -> None:
    # Outside an injected outage every POST must be acknowledged (after retries with the same
    # key). One that is not is no lost order, the client knows, but the API failed it.
    for post in posts:
        if not post.acknowledged:
            result.mismatched.append(
                f"{post.order_id} (key {post.body['client_order_id']}) not acknowledged after {post.tries} tries: "
                f"{post.status} {post.answer}"
            )


def exchange_totals(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {key: stats[key] for key in ("requests", "accepted", "duplicates_rejected", "failures")}
