"""The stream-chaos scenario: order stream clients while the feed duplicates and reorders reports and the runner
(which derives, logs and pushes the events) is SIGKILLed; each client is dropped now and then and reconnects
with its cursor, as the README tells clients to.

The checks: the account's log (GET /events) holds every order's events once (no execution twice), each
order's first event is `created` and its last one shows the order as GET /orders/{id} does; every client,
after one last reconnect with its cursor, holds exactly the log, each event as logged; and on each
connection the events first arrived in the order of their ids (a client that resumes from the highest id
it saw would skip one that came late).
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import WebSocketException

from chaos.checks import Expectations
from chaos.config import EXECUTIONS_FLOWING, MAX_ATTEMPTS, RunContext, StreamChaos
from chaos.harness import BackgroundThread, ChaosStack, FeedObserver, Monitor, Progress, chaos_stack
from chaos.results import Result
from chaos.steps import drain_and_verify, flag_unacknowledged, load_while_killing, scenario_result, stack_spec
from devstack.stack import DEMO_ACCOUNT
from devstack.stream_client import Account, HandshakeRefused, StreamClient, stream_url_of

NAME = "stream-chaos"
START_CURSOR = f"{0:020d}"
LOG_POLL_S = 1.0
LISTEN_TIMEOUT_S = 30.0


@dataclass
class Follower:
    """One client of the account's stream across its connections: what every connection brought, its cursor."""

    number: int
    url: str
    api_key: str
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    connections: int = 0
    repeats: int = 0
    out_of_order: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    client: StreamClient | None = None

    def cursor(self) -> str:
        """The highest event id seen: where a client following the README resumes."""
        self._absorb()
        return max(self.events, default=START_CURSOR)

    def connect(self) -> None:
        after = self.cursor()
        client = StreamClient(self.url, api_key=self.api_key)
        try:
            client.connect()
            client.listen_and_wait(after=after, timeout_s=LISTEN_TIMEOUT_S)
        except (AssertionError, OSError, HandshakeRefused, WebSocketException) as exc:
            # The stream may refuse or lag while the runner is down: the client retries on its next turn.
            self.failures.append(f"client {self.number} reconnect after {after}: {type(exc).__name__}: {exc}")
        self.client = client
        self.connections += 1

    def drop(self) -> None:
        """Vanish without a close frame, as a client losing its network does."""
        client = self.client
        if client is None:
            return
        client.vanish()
        held_before = set(self.events)
        self._absorb()
        # What came twice: on this connection, or again after a reconnect (the replay overlapping live pushes).
        self.repeats += client.duplicates + len(held_before & set(client.events))
        self.client = None

    def reconnect(self) -> None:
        self.drop()
        self.connect()

    def _absorb(self) -> None:
        client = self.client
        if client is None:
            return
        arrived = client.first_arrivals()
        if arrived != sorted(arrived):
            late = [b for a, b in itertools.pairwise(arrived) if b < a]
            line = f"client {self.number}, connection {self.connections}: events arrived out of order: {late[:5]}"
            if line not in self.out_of_order:
                self.out_of_order.append(line)
        for event_id, event in client.events.copy().items():
            self.events.setdefault(event_id, event)


class Dropper(BackgroundThread):
    """Drops a random client and reconnects it with its cursor, again and again, on a thread of its own."""

    def __init__(self, followers: Sequence[Follower], rng: random.Random, gap_s: tuple[float, float]) -> None:
        super().__init__("chaos-stream-drops")
        self.followers = followers
        self.rng = rng
        self.gap_s = gap_s
        self.drops = 0

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(*self.gap_s)):
            self.rng.choice(self.followers).reconnect()
            self.drops += 1


def stream_chaos(cfg: StreamChaos, ctx: RunContext) -> Result:
    """Clients dropped and reconnected while the feed misbehaves and the runner is killed: none misses an event."""
    rng = random.Random(ctx.seed)
    settings = {
        **EXECUTIONS_FLOWING,
        "EXCHANGE_FEED_DUPLICATE_RATE": str(cfg.duplicate_rate),
        "EXCHANGE_FEED_REORDER_RATE": str(cfg.reorder_rate),
        "EXCHANGE_REJECT_RATE": str(cfg.reject_rate),
        "EXCHANGE_CANCEL_RATE": str(cfg.cancel_rate),
    }
    spec = stack_spec(
        NAME,
        ctx,
        settings,
        runner_concurrency=cfg.runner_concurrency,
        visibility_timeout_s=cfg.visibility_timeout_s,
    )
    with Progress(NAME, ctx.stream) as progress:
        with (
            chaos_stack(spec) as chaos,
            Monitor(chaos, progress) as monitor,
            FeedObserver(chaos.stack.feed_url, chaos.stack.exchange_credential) as observer,
        ):
            account = Account(chaos.stack.api_url, stream_url_of(chaos.stack), DEMO_ACCOUNT, chaos.stack.api_key)
            followers = [Follower(n, account.stream_url, account.api_key) for n in range(1, cfg.clients + 1)]
            for follower in followers:
                follower.connect()
            progress.note(f"stack up; {cfg.orders} orders, {cfg.clients} stream clients, {cfg.runner_kills} kills")

            def kill_runner(number: int) -> None:
                chaos.kill_runner()
                progress.note(f"SIGKILL runner ({number}/{cfg.runner_kills})")

            with Dropper(followers, rng, cfg.drop_gap_s) as dropper:
                posts = load_while_killing(
                    chaos, progress, monitor, rng, cfg, cfg.runner_kills, kill_runner, chaos.start_runner
                )
                drained = drain_and_verify(
                    chaos, progress, posts, cfg.drain_timeout_s, Expectations(MAX_ATTEMPTS, executions=True)
                )
            log, log_problems = _settled_log(chaos, account, drained.order_ids, cfg.catch_up_timeout_s)
            progress.note(f"log: {len(log)} events; every client reconnects with its cursor")
            for follower in followers:
                follower.reconnect()
            lost = _catch_up(followers, log, cfg.catch_up_timeout_s)
            progress.note(f"clients caught up: {len(lost)} of {cfg.clients} miss events")
            for follower in followers:
                follower.drop()
        faults = (
            f"{observer.duplicates:,} duplicated and {observer.out_of_order:,} reordered of {observer.reports:,} "
            f"feed reports; {cfg.runner_kills} SIGKILLs of the runner; {dropper.drops} client drops"
        )
        details = {
            "events": len(log),
            "client_drops": dropper.drops,
            "connections": sum(f.connections for f in followers),
            "repeats_absorbed": sum(f.repeats for f in followers),
            "duplicated_reports": observer.duplicates,
            "reordered_reports": observer.out_of_order,
            "reconnect_failures": [line for f in followers for line in f.failures],
        }
        result = scenario_result(NAME, ctx, progress, chaos.log_path, drained, faults, details)
        flag_unacknowledged(result, posts)
        result.lost += lost
        result.duplicated += log_problems["duplicated"]
        result.mismatched += log_problems["mismatched"] + [line for f in followers for line in f.out_of_order]
        result.mismatched += [
            f"client {f.number} holds event {i} unlike the log" for f in followers for i in _differing(f, log)
        ]
    return result


def _settled_log(
    chaos: ChaosStack, account: Account, order_ids: Sequence[str], timeout_s: float
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """The account's log once each order's last event shows the order as it is, and what is wrong with it."""
    deadline = time.monotonic() + timeout_s
    while True:
        log = account.all_events()
        orders = {order_id: chaos.api.order(order_id) for order_id in order_ids}
        problems = check_log(log, orders)
        if not problems["mismatched"] or time.monotonic() >= deadline:
            return log, problems
        time.sleep(LOG_POLL_S)


def check_log(log: Sequence[Mapping[str, Any]], orders: Mapping[str, Mapping[str, Any] | None]) -> dict[str, list[str]]:
    """The log against the orders as they ended: each order's events begin with created, end as the order is,
    and carry each execution once."""
    found: dict[str, list[str]] = {"duplicated": [], "mismatched": []}
    ids = [str(e["id"]) for e in log]
    if ids != sorted(set(ids)):
        found["duplicated"].append("the log repeats or misorders event ids")
    executions = Counter(str(e["execution"]["id"]) for e in log if e.get("execution"))
    found["duplicated"] += [f"execution {i} in {n} events" for i, n in executions.items() if n > 1]
    by_order: dict[str, list[Mapping[str, Any]]] = {}
    for event in log:
        by_order.setdefault(str(event["order"]["id"]), []).append(event)
    for order_id, order in orders.items():
        events = by_order.get(order_id, [])
        if order is None:
            continue
        if not events or events[0]["type"] != "created":
            found["mismatched"].append(f"{order_id}: the log does not begin with created: {_types(events)}")
        elif dict(events[-1]["order"]) != dict(order):
            found["mismatched"].append(
                f"{order_id}: last event {events[-1]['type']} shows {events[-1]['order']['status']} "
                f"{events[-1]['order']['filled_quantity']}, the order is {order['status']} {order['filled_quantity']}"
            )
    return found


def _types(events: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(e["type"]) for e in events]


def _catch_up(followers: Sequence[Follower], log: Sequence[Mapping[str, Any]], timeout_s: float) -> list[str]:
    """Wait until every client holds every logged event; one line per client that does not."""
    wanted = {str(e["id"]) for e in log}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(wanted <= set(f.events) | set(f.client.events if f.client else {}) for f in followers):
            break
        time.sleep(LOG_POLL_S)
    lost = []
    for follower in followers:
        follower.cursor()  # takes in what its current connection brought
        missing = sorted(wanted - set(follower.events))
        if missing:
            lost.append(f"client {follower.number} misses {len(missing)} logged events: {missing[:5]}")
    return lost


def _differing(follower: Follower, log: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(e["id"]) for e in log if str(e["id"]) in follower.events and follower.events[str(e["id"])] != e]
