"""Plain `chalice local`, as README says to start it, against a running stack: what works and its own limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from chalicelib.adapters.api_keys import DynamoDBApiKeyRepository, api_key_record_class_for
from chalicelib.service.accounts import create_api_key
from devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module
from devstack.running_env import running_stack_environment

# moto_only: plain `chalice local` serving routes; the tables it reads are the integration tests'.
pytestmark = [pytest.mark.integration, pytest.mark.moto_only]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHALICE = str(Path(sys.executable).with_name("chalice"))
# chalice local's own answers (chalice/local.py), not our gateway responses.
CHALICE_LOCAL_401 = {"message": "Unauthorized"}
CHALICE_LOCAL_403 = {"Message": "User is not authorized to access this resource"}


@pytest.fixture(scope="module")
def stack_file(adapter_stack: dict[str, str], aws_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a running `make run` writes to .local/running-stack.json, for the tests' stack."""
    prefix = adapter_stack["ApiKeysTableName"].removesuffix("-api-keys")
    path = tmp_path_factory.mktemp("stack") / "running-stack.json"
    path.write_text(json.dumps({"endpoint_url": aws_endpoint, "resource_prefix": prefix, "api_url": ""}))
    return path


@pytest.fixture(scope="module")
def chalice_local(stack_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    # The environment of a developer's shell, with nothing of the tests' emulator in it: only the
    # command README gives may point chalice local at the stack.
    shell_env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    command = python_module("devstack.running_env", "--stack-file", str(stack_file), "--")
    process = ManagedProcess(
        "chalice-local",
        [*command, CHALICE, "local", "--stage", "local", "--host", LOOPBACK, "--port", str(port)],
        env=shell_env,
        cwd=str(REPO_ROOT),
        ready_url=f"http://{LOOPBACK}:{port}/openapi.json",
        stdout=(tmp_path_factory.mktemp("chalice") / "chalice-local.log").open("wb"),
    ).start()
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        process.stop()


@pytest.fixture(scope="module")
def api_key(adapter_stack: dict[str, str]) -> str:
    keys = DynamoDBApiKeyRepository(api_key_record_class_for(adapter_stack["ApiKeysTableName"]))
    return create_api_key("acme", "chalice local test", keys).plaintext


def test_a_bearer_key_reaches_the_routes_and_the_stacks_tables(chalice_local: str, api_key: str) -> None:
    response = requests.get(f"{chalice_local}/orders", headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"orders": [], "next": None}


def test_x_api_key_alone_gets_chalice_locals_own_401(chalice_local: str, api_key: str) -> None:
    # chalice local emulates a TOKEN authorizer: without an Authorization header it answers by itself.
    for headers in ({"x-api-key": api_key}, {}):
        response = requests.get(f"{chalice_local}/orders", headers=headers, timeout=30)
        assert response.status_code == 401, response.text
        assert response.json() == CHALICE_LOCAL_401


def test_a_bad_key_gets_chalice_locals_own_403_not_our_401(chalice_local: str) -> None:
    # Our authorizer denies; chalice local turns any Deny into its 403, where API Gateway gives our 401.
    response = requests.get(f"{chalice_local}/orders", headers={"Authorization": "Bearer garbage"}, timeout=30)
    assert response.status_code == 403, response.text
    assert response.json() == CHALICE_LOCAL_403


def test_the_environment_names_the_stacks_emulator_and_tables(stack_file: Path, adapter_stack: dict[str, str]) -> None:
    environment = running_stack_environment(stack_file)
    assert environment["API_KEYS_TABLE_NAME"] == adapter_stack["ApiKeysTableName"]
    assert environment["ORDERS_TABLE_NAME"] == adapter_stack["OrdersTableName"]
    assert environment["AWS_ENDPOINT_URL"] == json.loads(stack_file.read_text())["endpoint_url"]
    assert environment["AWS_ACCESS_KEY_ID"] == "testing"


def test_without_a_running_stack_it_says_to_start_one(tmp_path: Path) -> None:
    completed = subprocess.run(
        python_module("devstack.running_env", "--stack-file", str(tmp_path / "none.json")),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert "make run" in completed.stderr
