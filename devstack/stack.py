"""The whole local system: emulator, resources, a demo API key, exchange simulator, Lambda runner, the local API
and its WebSocket side (the order event stream)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, TypeVar, cast

from pynamodb.models import Model

from chalicelib.adapters.accounts_table import (
    DynamoDBAccountLimits,
    DynamoDBAccountRateLimits,
    account_record_class_for,
)
from chalicelib.adapters.api_keys import DynamoDBApiKeyRepository, api_key_record_class_for
from chalicelib.domain.accounts import ApiKeyInvalid, key_id_of
from chalicelib.domain.rate_limits import DEFAULT_RATE_LIMIT, AccountRateLimit, RateLimit
from chalicelib.domain.risk import AccountLimits
from chalicelib.service.accounts import create_api_key, revoke_api_key
from chalicelib.stack_outputs import settings_environment
from devstack.emulator import EMULATOR_ENV, emulator_client, emulator_env, running_emulator
from devstack.exchange_sim.config import CREDENTIAL_ENV
from devstack.lifeline import Lifeline, lifeline
from devstack.ports import PortInUse, require_free_ports
from devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module
from devstack.provision import provision
from devstack.venue_credential import SECRET_NAME_VARIABLE, default_secret_name, ensure_exchange_credential

RecordT = TypeVar("RecordT", bound=Model)

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where a running `make run` says where it is, for tools such as `python -m ops`.
RUNNING_STACK_FILE = REPO_ROOT / ".local" / "running-stack.json"
DEFAULT_STACK_NAME = "brokerage-local"
# The account `make run` creates a key for, so the API can be tried at once.
DEMO_ACCOUNT = "demo"
# Where the app's functions post to WebSocket connections (its pusher's endpoint): the stream server's management API.
STREAM_MANAGEMENT_URL_VARIABLE = "STREAM_MANAGEMENT_URL"


def start_exchange(
    port: int,
    feed_port: int,
    env: Mapping[str, str],
    stdout: IO[bytes] | int | None = None,
    lifeline: Lifeline | None = None,
    credential: str | None = None,
) -> ManagedProcess:
    """The exchange simulator; with a credential, it demands it on order entry and the feed (else nothing)."""
    # In the simulator's environment only (not on its command line, which any local user can list).
    sim_env = {**env, CREDENTIAL_ENV: credential} if credential else env
    return ManagedProcess(
        "exchange",
        python_module("devstack.exchange_sim", "--host", LOOPBACK, "--port", str(port), "--feed-port", str(feed_port)),
        env=sim_env,
        cwd=str(REPO_ROOT),
        ready_url=f"http://{LOOPBACK}:{port}/health",
        stdout=stdout,
        lifeline=lifeline,
    ).start()


def start_runner(
    env: Mapping[str, str],
    schedule_interval_s: float,
    stdout: IO[bytes] | int | None = None,
    lifeline: Lifeline | None = None,
    reconcile_interval_s: float | None = None,
) -> ManagedProcess:
    # The reconciler asks the exchange about every open order: at the sweep's
    # pace (a second in the tests) it would keep the simulator and moto busy.
    reconcile = ("--schedule-interval-of", f"reconcile_orders={reconcile_interval_s}") if reconcile_interval_s else ()
    return ManagedProcess(
        "runner",
        python_module(
            "devstack.runner",
            *("--app", "app:app", "--stage", "local", "--schedule-interval", str(schedule_interval_s)),
            *reconcile,
        ),
        env=env,
        cwd=str(REPO_ROOT),
        stdout=stdout,
        lifeline=lifeline,
    ).start()


def start_bridge(
    env: Mapping[str, str], stdout: IO[bytes] | int | None = None, lifeline: Lifeline | None = None
) -> ManagedProcess:
    return ManagedProcess(
        "bridge", python_module("feed_bridge"), env=env, cwd=str(REPO_ROOT), stdout=stdout, lifeline=lifeline
    ).start()


def start_api(
    port: int, env: Mapping[str, str], stdout: IO[bytes] | int | None = None, lifeline: Lifeline | None = None
) -> ManagedProcess:
    # Our app behind the emulated API Gateway (the deployed authorizer's
    # behaviour: both key headers, our 401 bodies), served by gunicorn: see devstack/api_server.py.
    return ManagedProcess(
        "api",
        python_module("devstack.api_server", "--host", LOOPBACK, "--port", str(port), "--stage", "local"),
        env=env,
        cwd=str(REPO_ROOT),
        # Any answer means it serves; the document needs no key (and logs no refusal).
        ready_url=f"http://{LOOPBACK}:{port}/openapi.json",
        stdout=stdout,
        lifeline=lifeline,
    ).start()


def start_stream_server(
    port: int,
    management_port: int,
    env: Mapping[str, str],
    stdout: IO[bytes] | int | None = None,
    lifeline: Lifeline | None = None,
) -> ManagedProcess:
    # API Gateway's WebSocket side for the app's $connect/$default/$disconnect handlers and the
    # management API they post through (chalice local serves neither): see devstack/stream_server.py.
    return ManagedProcess(
        "stream",
        python_module(
            "devstack.stream_server",
            *("--host", LOOPBACK, "--port", str(port), "--management-port", str(management_port), "--stage", "local"),
        ),
        env=env,
        cwd=str(REPO_ROOT),
        # A plain GET is answered 426 by the WebSocket port without running any handler.
        ready_url=f"http://{LOOPBACK}:{port}/",
        stdout=stdout,
        lifeline=lifeline,
    ).start()


# Setting up state (keys, limits) is not a request a client waits on: the functions' tight timeouts
# (1 s connect, 3 s read, 2 attempts, for a Lambda's time budget) would fail a test's setup whenever
# the emulator is busy (CI saw a key's PutItem time out twice during `make test`).
EMULATOR_SETUP_CONNECTION = {"connect_timeout_seconds": 5, "read_timeout_seconds": 30, "max_retry_attempts": 4}


def _with_emulator_credentials(records: type[RecordT]) -> type[RecordT]:
    """The record class reaching the emulator with its fake credentials, whatever this process's environment holds,
    and patient timeouts (EMULATOR_SETUP_CONNECTION)."""
    settings = {
        "aws_access_key_id": EMULATOR_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": EMULATOR_ENV["AWS_SECRET_ACCESS_KEY"],
        "aws_session_token": EMULATOR_ENV["AWS_SESSION_TOKEN"],
        "region": EMULATOR_ENV["AWS_DEFAULT_REGION"],
        **EMULATOR_SETUP_CONNECTION,
    }
    # PynamoDB types Meta as a protocol; on a bound record class it is a class.
    meta = type("Meta", (cast(type, records.Meta),), settings)
    return type(f"Emulator{records.__name__}", (records,), {"Meta": meta})


def emulator_api_keys(endpoint_url: str, table_name: str) -> DynamoDBApiKeyRepository:
    """The API keys table on the emulator."""
    return DynamoDBApiKeyRepository(_with_emulator_credentials(api_key_record_class_for(table_name, host=endpoint_url)))


def emulator_account_limits(endpoint_url: str, table_name: str) -> DynamoDBAccountLimits:
    """The accounts table (risk limits) on the emulator."""
    return DynamoDBAccountLimits(_with_emulator_credentials(account_record_class_for(table_name, host=endpoint_url)))


# The demo account's pre-trade risk limits: what every order the request model accepts needs
# (MAX_ORDER_QUANTITY x MAX_LIMIT_PRICE), and a backlog of many thousands of open orders, because
# the e2e tests, `make bench` and `make chaos` all post as this account, market orders and large
# quantities included. A new account gets the defaults (DEFAULT_MAX_* in chalicelib/config.py).
DEMO_LIMITS = AccountLimits(
    max_order_notional=Decimal("1000000000000"), max_open_orders=1_000_000, max_order_quantity=1_000_000
)


# The demo account's request rate limit: far above what this machine serves (the local API does
# ~100-200 requests/s), so `make bench` (64 clients), `make chaos`, schemathesis and the e2e tests,
# which all use this account, are never throttled; other accounts get the default (10/s, burst 50).
DEMO_RATE_LIMIT = RateLimit(rate=2_000, burst=4_000)


@dataclass(frozen=True)
class ScheduleIntervals:
    """Seconds between runs of `make run`'s scheduled functions (LOCAL_SWEEP_INTERVAL_S, LOCAL_RECONCILE_INTERVAL_S)."""

    sweep_s: float
    reconcile_s: float


@dataclass
class LocalStack:
    """Handles of a running local system, for `make run` and the end-to-end tests."""

    endpoint_url: str
    api_url: str
    exchange_url: str
    feed_url: str
    env: dict[str, str]
    resources: dict[str, str]
    api_key: str  # a key of the DEMO_ACCOUNT, created at start
    log_path: Path | None = None
    # What the simulator demands on order entry and the feed's handshake (the stack's secret's value),
    # for test and chaos clients of the venue; the functions and the bridge read it from the secret.
    exchange_credential: str | None = None
    stream_url: str = ""  # the order event stream, ws://...
    stream_management_url: str = ""  # the management API the functions post to connections through
    processes: list[ManagedProcess] = field(default_factory=list)

    def process(self, name: str) -> ManagedProcess:
        return next(process for process in self.processes if process.name == name)

    def new_api_key(self, account_id: str, label: str | None = None) -> str:
        """A new key for any account (which exists from its first key on), as `python -m ops keys create` makes."""
        return create_api_key(account_id, label, self._api_keys()).plaintext

    def revoke_api_key(self, key: str) -> None:
        """Revoke a key, given its key id or the whole key, as `python -m ops keys revoke` does."""
        try:
            key_id = key_id_of(key)
        except ApiKeyInvalid:
            key_id = key
        if revoke_api_key(key_id, self._api_keys()) is None:
            raise KeyError(f"no API key {key_id}")

    def set_limits(self, account_id: str, limits: AccountLimits) -> AccountLimits:
        """Set an account's risk limits (the others stay), as `python -m ops accounts limits` does."""
        return emulator_account_limits(self.endpoint_url, self.resources["AccountsTableName"]).set(account_id, limits)

    def limits_of(self, account_id: str) -> AccountLimits:
        """What the operator set for the account (None: the default)."""
        return emulator_account_limits(self.endpoint_url, self.resources["AccountsTableName"]).get(account_id)

    def set_rate_limit(self, account_id: str, limit: RateLimit | None) -> AccountRateLimit:
        """Set an account's request rate limit (None: the default), as `python -m ops keys rate-limit` does locally."""
        return self._rate_limits().set_limit(account_id, limit)

    def rate_limit_of(self, account_id: str) -> RateLimit:
        """The account's request rate limit in force."""
        return self._rate_limits().get(account_id).in_force

    def _rate_limits(self) -> DynamoDBAccountRateLimits:
        records = account_record_class_for(self.resources["AccountsTableName"], host=self.endpoint_url)
        return DynamoDBAccountRateLimits(_with_emulator_credentials(records))

    def _api_keys(self) -> DynamoDBApiKeyRepository:
        return emulator_api_keys(self.endpoint_url, self.resources["ApiKeysTableName"])


def _stack_environment(
    endpoint: str, exchange_url: str, feed_url: str, stream_management_url: str, overrides: Mapping[str, str] | None
) -> dict[str, str]:
    """What every process of the stack runs with: the emulator, the venue, the stream's management API, the knobs."""
    env = {
        **os.environ,
        **emulator_env(endpoint),
        "EXCHANGE_URL": exchange_url,
        "EXCHANGE_FEED_URL": feed_url,
        # The API (its routes close nothing today, but may), the runner's functions and the stream
        # server's handlers all post to connections through the stream server's management API.
        STREAM_MANAGEMENT_URL_VARIABLE: stream_management_url,
        **(overrides or {}),
    }
    env.setdefault("PYTHONUNBUFFERED", "1")
    # EMF metrics are for CloudWatch; locally they would only flood the console.
    env.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    # Placement scales like Lambda up to infra's maximum concurrency (50), but here every
    # batch shares one emulator process: measured (docs/BENCHMARKS.md section 2), 2, 4, 8
    # and 16 concurrent batches all drain ~11-12 orders/s with moto at ~90% of a core, and
    # 50 drains slower (8/s) as moto's calls queue up. 4 keeps the scaling visible, not the contention.
    env.setdefault("RUNNER_MAX_SQS_CONCURRENCY", "4")
    # The simulator's feed restarts at seq 1 with every start, while a
    # persistent emulator (LocalStack) keeps the bridge's checkpoint: one
    # checkpoint per simulator run, or the bridge would skip the new reports.
    env.setdefault("FEED_ID", f"exchange-sim-{uuid.uuid4().hex[:12]}")
    return env


@contextlib.contextmanager
def local_stack(
    api_port: int,
    exchange_port: int,
    feed_port: int,
    schedule_interval_s: float,
    overrides: Mapping[str, str] | None = None,
    log: IO[bytes] | None = None,
    reconcile_interval_s: float | None = None,
    stream_port: int | None = None,
    stream_management_port: int | None = None,
) -> Iterator[LocalStack]:
    """Start everything, yield its handles, stop everything (reverse order) however the block ends.

    The stream server's ports, when not given, are free ones (tests and
    benchmarks run beside a `make run`, which uses 8003 and 8004).

    Raises PortInUse, having started nothing, if a port it needs is taken: a
    stale server there would answer the readiness probes. Should this process
    die without stopping them (SIGKILL), the lifeline and the parent death
    signal take every child and its workers down with it.
    """
    stream_port = stream_port or free_port()
    stream_management_port = stream_management_port or free_port()
    ports = {"API": api_port, "exchange simulator": exchange_port, "execution feed": feed_port}
    require_free_ports({**ports, "WebSocket stream": stream_port, "stream management API": stream_management_port})
    with lifeline() as line, running_emulator(line) as endpoint:
        exchange_url = f"http://{LOOPBACK}:{exchange_port}"
        feed_url = f"ws://{LOOPBACK}:{feed_port}/feed"
        stream_management_url = f"http://{LOOPBACK}:{stream_management_port}"
        env = _stack_environment(endpoint, exchange_url, feed_url, stream_management_url, overrides)
        prefix = env.get("RESOURCE_PREFIX", DEFAULT_STACK_NAME)
        resources = provision(
            endpoint,
            stack_name=prefix,
            cloudformation_client=emulator_client("cloudformation", endpoint),
            secretsmanager_client=emulator_client("secretsmanager", endpoint),
            parameters={
                "ResourcePrefix": prefix,
                # The redrive policy and the handler must agree on the attempts.
                "PlacementMaxAttempts": env.get("PLACEMENT_MAX_ATTEMPTS", "3"),
            },
        )
        env.update(settings_environment(resources))
        # The venue credential the functions and the bridge read from the emulator, demanded by the simulator.
        env.setdefault(SECRET_NAME_VARIABLE, default_secret_name(prefix))
        credential = ensure_exchange_credential(emulator_client("secretsmanager", endpoint), env[SECRET_NAME_VARIABLE])
        demo_key = create_api_key(
            DEMO_ACCOUNT, "local stack demo key", emulator_api_keys(endpoint, resources["ApiKeysTableName"])
        )
        stack = LocalStack(
            endpoint, f"http://{LOOPBACK}:{api_port}", exchange_url, feed_url, env, resources, demo_key.plaintext
        )
        stack.exchange_credential = credential
        stack.stream_url = f"ws://{LOOPBACK}:{stream_port}"
        stack.stream_management_url = env[STREAM_MANAGEMENT_URL_VARIABLE]
        stack.set_limits(DEMO_ACCOUNT, DEMO_LIMITS)
        # Before the API starts: its first read of the demo account's limit finds this one.
        stack.set_rate_limit(DEMO_ACCOUNT, DEMO_RATE_LIMIT)
        starters: list[Callable[[], ManagedProcess]] = [
            lambda: start_exchange(exchange_port, feed_port, env, log, line, credential=credential),
            lambda: start_bridge(env, log, line),
            # Before the runner: its order event publisher posts to the connections from its first batch.
            lambda: start_stream_server(stream_port, stream_management_port, env, log, line),
            lambda: start_runner(env, schedule_interval_s, log, line, reconcile_interval_s),
            lambda: start_api(api_port, env, log, line),
        ]
        try:
            for start in starters:
                stack.processes.append(start())
            yield stack
        finally:
            # Whatever runs now, including replacements a test or benchmark
            # swapped in (a restarted bridge or runner), newest first.
            for process in reversed(stack.processes):
                process.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--exchange-port", type=int, default=int(os.environ.get("EXCHANGE_PORT", "8001")))
    parser.add_argument("--feed-port", type=int, default=int(os.environ.get("EXCHANGE_FEED_PORT", "8002")))
    parser.add_argument(
        "--stream-port",
        type=int,
        default=int(os.environ.get("STREAM_PORT", "8003")),
        help="the order event stream's WebSocket port",
    )
    parser.add_argument(
        "--stream-management-port",
        type=int,
        default=int(os.environ.get("STREAM_MANAGEMENT_PORT", "8004")),
        help="the stream's management API (what the functions post to connections through)",
    )
    parser.add_argument(
        "--sweep-interval",
        type=float,
        default=float(os.environ.get("LOCAL_SWEEP_INTERVAL_S", "10")),
        help="seconds between runs of the scheduled pending-order sweep (AWS: every minute)",
    )
    parser.add_argument(
        "--reconcile-interval",
        type=float,
        default=float(os.environ.get("LOCAL_RECONCILE_INTERVAL_S", "60")),
        help="seconds between runs of the reconciler (AWS: every RECONCILE_INTERVAL_MIN minutes, 5 by default)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=RUNNING_STACK_FILE,
        help="where to say where the running stack is, for `python -m ops` (tests use their own)",
    )
    args = parser.parse_args(argv)

    # Log lines stay one JSON line each, as CloudWatch shows them and as `make bench` measures the
    # stack: Powertools' development mode (POWERTOOLS_DEV=true, opt-in) indents each into ~11
    # terminal lines and costs ~25 us more per line (60 against 36 us, measured with its Logger).
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())

    try:
        intervals = ScheduleIntervals(args.sweep_interval, args.reconcile_interval)
        return serve(
            args.port,
            args.exchange_port,
            args.feed_port,
            intervals,
            args.state_file,
            stopping,
            stream_ports=(args.stream_port, args.stream_management_port),
        )
    except PortInUse as exc:
        print(f"cannot start the local stack: {exc}", file=sys.stderr, flush=True)
        print(
            "stop that process, or choose other ports: --port/PORT, --exchange-port/EXCHANGE_PORT, "
            "--feed-port/EXCHANGE_FEED_PORT, --stream-port/STREAM_PORT, "
            "--stream-management-port/STREAM_MANAGEMENT_PORT",
            file=sys.stderr,
            flush=True,
        )
        return 2


def serve(
    api_port: int,
    exchange_port: int,
    feed_port: int,
    intervals: ScheduleIntervals,
    state_file: Path,
    stopping: threading.Event,
    stream_ports: tuple[int, int] = (8003, 8004),
) -> int:
    """Run the stack until stopping is set (0) or one of its processes exits (1)."""
    with local_stack(
        api_port,
        exchange_port,
        feed_port,
        intervals.sweep_s,
        reconcile_interval_s=intervals.reconcile_s,
        stream_port=stream_ports[0],
        stream_management_port=stream_ports[1],
    ) as stack:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(
            json.dumps(
                {
                    "endpoint_url": stack.endpoint_url,
                    "resource_prefix": stack.env.get("RESOURCE_PREFIX", DEFAULT_STACK_NAME),
                    "api_url": stack.api_url,
                    "stream_url": stack.stream_url,
                    "stream_management_url": stack.stream_management_url,
                }
            )
        )
        print(f"AWS emulator:       {stack.endpoint_url}", flush=True)
        print(f"exchange simulator: {stack.exchange_url} (execution feed {stack.feed_url})", flush=True)
        print(
            f"order event stream: {stack.stream_url}  (WebSocket; management API {stack.stream_management_url})",
            flush=True,
        )
        print(f"API ready:          {stack.api_url}  (Ctrl-C stops everything)", flush=True)
        print(f"API key (account {DEMO_ACCOUNT}): {stack.api_key}", flush=True)
        print(f"  try: curl -s {stack.api_url}/orders -H 'Authorization: Bearer {stack.api_key}'", flush=True)
        print("  more keys: .venv/bin/python -m ops keys create --account <account id>", flush=True)
        limits = ", ".join(f"{name} {value}" for name, value in vars(stack.limits_of(DEMO_ACCOUNT)).items())
        print(f"risk limits (account {DEMO_ACCOUNT}): {limits}", flush=True)
        print(
            "  other accounts: the defaults (DEFAULT_MAX_*); see or set: .venv/bin/python -m ops accounts limits "
            "--account <account id>",
            flush=True,
        )
        print(f"rate limit (account {DEMO_ACCOUNT}): {stack.rate_limit_of(DEMO_ACCOUNT).describe()}", flush=True)
        print(
            f"  other accounts: {DEFAULT_RATE_LIMIT.describe()} (429 with Retry-After over it); see or set: "
            ".venv/bin/python -m ops keys rate-limit --account <account id> [--rate N --burst N]",
            flush=True,
        )
        while not stopping.wait(0.5):
            dead = [p.name for p in stack.processes if not p.alive()]
            if dead:
                print(f"stopping: {', '.join(dead)} exited", file=sys.stderr, flush=True)
                state_file.unlink(missing_ok=True)
                return 1
        state_file.unlink(missing_ok=True)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
