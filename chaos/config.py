"""Every number and setting the chaos scenarios depend on, at two sizes (FULL, SMALL), and what one run shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

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


@dataclass(frozen=True, kw_only=True)
class LoadSizes:
    """Sizes of a scenario that POSTs a stream of orders (every scenario but duplicate-posts)."""

    orders: int
    max_rate: float  # POSTs per second at most
    max_queue_depth: int = 150  # moto's SQS slows down with depth: hold POSTs back above this
    runner_concurrency: int = 4
    load_timeout_s: float = 600.0
    drain_timeout_s: float = 300.0


@dataclass(frozen=True, kw_only=True)
class KillSizes(LoadSizes):
    """Sizes of a scenario that SIGKILLs a process again and again while it POSTs."""

    kill_gap_s: tuple[float, float]  # between one restart and the next kill
    down_s: tuple[float, float]  # between a kill and the restart


@dataclass(frozen=True, kw_only=True)
class ExchangeFailures(LoadSizes):
    """Sizes of the exchange-failures scenario."""

    orders: int = 2_000
    failure_rate: float = 0.3
    max_attempts: int = MAX_ATTEMPTS
    max_rate: float = 40.0
    load_timeout_s: float = 900.0


@dataclass(frozen=True, kw_only=True)
class RunnerKills(KillSizes):
    """Sizes of the runner-kills scenario."""

    orders: int = 600
    kills: int = 8
    kill_gap_s: tuple[float, float] = (3.0, 7.0)
    down_s: tuple[float, float] = (0.2, 2.0)
    failure_rate: float = 0.1
    max_rate: float = 12.0
    # A message received by a killed runner comes back after this; the template's 60 s
    # would make most of the run waiting.
    visibility_timeout_s: int = 10


@dataclass(frozen=True, kw_only=True)
class EmulatorOutage(LoadSizes):
    """Sizes of the emulator-outage scenario."""

    orders_before: int = 300  # acknowledged before the outage begins
    orders: int = 600  # POSTs in all, before, during and after the outage
    outage_s: float = 20.0
    max_rate: float = 10.0
    visibility_timeout_s: int = 10


@dataclass(frozen=True, kw_only=True)
class FeedChaos(KillSizes):
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


@dataclass(frozen=True, kw_only=True)
class LostAnswers(LoadSizes):
    """Sizes of the lost-answers scenario: placement answers and execution reports lost, then convergence."""

    orders: int = 500
    max_rate: float = 10.0
    # The simulator's knobs while the faults last (EXCHANGE_<KNOB> at start, 0 after):
    # an accepted placement's answer dropped (the client sees the connection close) ...
    lost_answer_rate: float = 0.2
    # ... every placement answer dropped, for this share of orders: each attempt looks failed ...
    lost_answer_order_rate: float = 0.05
    # ... an execution report lost for good, neither on the feed nor replayable ...
    feed_loss_rate: float = 0.1
    # ... 503s, so that some orders whose answers were lost meet one on their last
    # attempt (the hole of issue 14) ...
    failure_rate: float = 0.2
    # ... and the order status query itself unavailable now and then.
    status_failure_rate: float = 0.1
    # After the last POST the faults go on until the exchange has seen every order and
    # none is pending here (every placement attempt met them), at most this long.
    faults_outlast_load_s: float = 30.0
    # The runner fires the sweep and the reconciler this often (deployed: minutes), and the
    # sweep takes up an order this long after its lease, so that convergence happens in the run.
    schedule_interval_s: float = 1.5
    pending_sweep_after_s: int = 5
    # From the faults stopping until every order agrees with the exchange.
    drain_timeout_s: float = 300.0


@dataclass(frozen=True, kw_only=True)
class StreamChaos(KillSizes):
    """Sizes of the stream-chaos scenario: order stream clients while the feed and the runner misbehave."""

    orders: int = 300
    clients: int = 4  # stream clients of the account, each dropped and reconnected with its cursor now and then
    runner_kills: int = 4
    kill_gap_s: tuple[float, float] = (3.0, 7.0)
    down_s: tuple[float, float] = (0.2, 2.0)
    drop_gap_s: tuple[float, float] = (1.0, 3.0)  # between one client's drop and the next client's
    duplicate_rate: float = 0.3
    reorder_rate: float = 0.3
    reject_rate: float = 0.05
    cancel_rate: float = 0.1
    max_rate: float = 10.0
    visibility_timeout_s: int = 10
    # From the orders settling until every client, reconnected with its cursor, holds the whole log.
    catch_up_timeout_s: float = 60.0


@dataclass(frozen=True, kw_only=True)
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
    lost_answers: LostAnswers = field(default_factory=LostAnswers)
    stream: StreamChaos = field(default_factory=StreamChaos)


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
    # A higher share of orders with every answer lost: at 60 orders, 0.05 would give none
    # in about one run of twenty. Convergence waits out each such order's placement
    # lease (about 20 s) before the exchange is asked, hence the longer timeout.
    lost_answers=LostAnswers(
        orders=60,
        max_rate=15.0,
        lost_answer_order_rate=0.1,
        faults_outlast_load_s=10.0,
        runner_concurrency=2,
        drain_timeout_s=90.0,
    ),
    stream=StreamChaos(
        orders=30,
        clients=3,
        runner_kills=2,
        kill_gap_s=(1.5, 3.0),
        down_s=(0.2, 0.8),
        drop_gap_s=(0.5, 1.5),
        max_rate=10.0,
        visibility_timeout_s=5,
        runner_concurrency=2,
        drain_timeout_s=60.0,
        catch_up_timeout_s=30.0,
    ),
)


@dataclass(frozen=True)
class RunContext:
    """What every scenario of one run shares."""

    seed: int
    log_dir: Path
    stream: TextIO | None = None  # progress; stderr by default
