"""Shared fixtures: one AWS emulator for the whole test session, real and over HTTP, and our own stack on it."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.emulator import emulator_env, running_emulator
from devstack.provision import provision

# Helpers outside test modules assert too: rewritten like the tests' own asserts, a failure shows its values.
pytest.register_assert_rewrite("tests.contracts", "tests.deploy.support", "tests.e2e.helpers", "tests.tooling")


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """Endpoint URL of a running emulator; the environment points boto3 and PynamoDB at it."""
    with running_emulator() as endpoint:
        previous = {key: os.environ.get(key) for key in emulator_env(endpoint)}
        os.environ.update(emulator_env(endpoint))
        try:
            yield endpoint
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="session")
def adapter_stack(aws_endpoint: str) -> dict[str, str]:
    """Outputs of a stack provisioned from infra/ with a unique prefix, so its tests share no table with anyone."""
    prefix = f"it-{uuid.uuid4().hex[:8]}"
    return provision(aws_endpoint, stack_name=prefix, parameters={"ResourcePrefix": prefix})


# Every process a test starts inherits this marker through its environment,
# so at the end the session can find any it left behind, even one that was
# re-parented to init after its parent died.
SESSION_MARKER = "BROKERAGE_TEST_SESSION"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--emulator-tests-only",
        action="store_true",
        help="run only the tests that use the session's emulator (aws_endpoint), e.g. again on LocalStack",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `make test-localstack` runs the suites a second time on LocalStack: a test that never talks
    # to the emulator (templates, packaging, the runner against fakes) would only repeat itself.
    # That run is for our adapters and the local stack on LocalStack's own implementations (DynamoDB
    # Local's conditions, transactions, GSIs and streams; its SQS, Kinesis, Secrets Manager,
    # CloudFormation). A test marked moto_only talks to the emulator only as storage that the
    # integration tests already check there (API validation, error shapes, docs, the simulator's own
    # behaviour, rate limits, key scopes, ...): it runs in `make test` on moto and not again.
    if not config.getoption("--emulator-tests-only"):
        return

    def on_localstack(item: pytest.Item) -> bool:
        uses_emulator = "aws_endpoint" in getattr(item, "fixturenames", ())
        return uses_emulator and item.get_closest_marker("moto_only") is None

    selected = [item for item in items if on_localstack(item)]
    deselected = [item for item in items if not on_localstack(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def pytest_sessionstart(session: pytest.Session) -> None:
    os.environ[SESSION_MARKER] = f"{os.getpid()}-{uuid.uuid4().hex}"


def _processes_marked(marker: str) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if f"{SESSION_MARKER}={marker}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    marker = os.environ.get(SESSION_MARKER)
    if not marker or not Path("/proc").is_dir():
        return
    leftovers = _processes_marked(marker)
    if not leftovers:
        return
    for pid, _ in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    listing = "\n".join(f"  {pid} {cmd}" for pid, cmd in leftovers)
    print(f"\nFAILED: processes left running by the tests (now killed):\n{listing}", file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
