"""The packaged stack deployed into LocalStack with `make deploy`, its code run from the deployment zip.

Run by `make test-deploy` (make/localstack.mk): `devstack.localstack run
--profile deploy` starts LocalStack on 127.0.0.1 with the legacy
CloudFormation engine and the host Lambda executor, and points
AWS_ENDPOINT_URL at it. These fixtures pick the exchange simulator's ports,
run the same `make deploy` a developer runs against AWS (package, upload,
deploy), with the simulator's URL as the ExchangeUrl parameter, then start
the simulator demanding the venue credential the stack generated (its
secret, read as the venue would be told it), and the feed bridge against the
deployed stream. Nothing is changed in the deployed functions afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from chalicelib.stack_outputs import settings_environment
from devstack.emulator import emulator_env
from devstack.localstack import READY_STATES, health, is_localstack
from devstack.localstack_files import VENV_PYTHON
from devstack.processes import LOOPBACK, ManagedProcess, free_port
from devstack.stack import emulator_api_keys, start_bridge, start_exchange
from tests.deploy.support import DeployedStack

REPO = Path(__file__).resolve().parents[2]
STAGE = "dev"
STACK_NAME = f"brokerage-orders-{STAGE}"
BUCKET = "brokerage-deploy-test"
# The AWS CLI that LocalStack's own environment brings: the same `aws
# cloudformation package` / `deploy` a developer runs, no install of ours.
AWS_CLI = VENV_PYTHON.parent / "aws"
# Under the suite's own pytest timeout (tests/deploy/test_deployed_stack.py),
# so that a stuck deploy fails here, with its log, not as a bare timeout.
DEPLOY_TIMEOUT_S = 240
# Not build/dev: a developer's `make package STAGE=dev` output stays as it was.
PACKAGE_DIR = "build/test-deploy"
# The simulator fills every order and fails nothing: these tests show wiring, not faults.
EXCHANGE_KNOBS = {
    "EXCHANGE_LATENCY_S": "0.05",
    "EXCHANGE_FAILURE_RATE": "0",
    "EXCHANGE_REJECT_RATE": "0",
    "EXCHANGE_CANCEL_RATE": "0",
    "EXCHANGE_EXEC_DELAY_S": "0.05",
}


@pytest.fixture(scope="session")
def endpoint_url() -> str:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if not endpoint or not is_localstack(endpoint):
        pytest.fail("tests/deploy needs a LocalStack: run `make test-deploy`")
    return endpoint


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("deploy"))


@pytest.fixture(scope="session")
def exchange_ports() -> tuple[int, int]:
    """(order entry, feed) ports of the simulator: the deploy names its URL before the simulator can start."""
    return free_port(), free_port()


@pytest.fixture(scope="session")
def venue_credential(deployed: DeployedStack) -> str:
    """The credential the stack generated (ExchangeCredentialSecret): what the venue would be told."""
    secret = deployed.client("secretsmanager").get_secret_value(
        SecretId=deployed.outputs["ExchangeCredentialSecretName"]
    )
    value = str(secret["SecretString"])
    assert len(value) >= 32, "the generated credential is too short"
    return value


@pytest.fixture(scope="session")
def exchange(
    exchange_ports: tuple[int, int], deployed: DeployedStack, venue_credential: str, log_dir: Path
) -> Iterator[tuple[str, str]]:
    """(order entry URL, feed URL) of a simulator on loopback that demands the deployed venue credential.

    Started after the deploy (the secret's value exists only then), on the
    ports the deploy gave the functions; until it runs, a scheduled
    reconciler finds no venue and tries again on its next run.
    """
    port, feed_port = exchange_ports
    with (log_dir / "exchange.log").open("wb") as log:
        process = start_exchange(port, feed_port, {**os.environ, **EXCHANGE_KNOBS}, log, credential=venue_credential)
        try:
            yield f"http://{LOOPBACK}:{port}", f"ws://{LOOPBACK}:{feed_port}/feed"
        finally:
            process.stop()


def websocket_api_supported(endpoint_url: str) -> bool:
    """Whether this LocalStack runs API Gateway v2 (Pro does; community, as `make test-deploy` runs it, has none)."""
    return service_ready(endpoint_url, "apigatewayv2")


def service_ready(endpoint_url: str, service: str) -> bool:
    """Whether this LocalStack runs the service (community lacks apigatewayv2 and wafv2)."""
    services = (health(endpoint_url) or {}).get("services", {})
    return services.get(service) in READY_STATES


def make_deploy(endpoint_url: str, exchange_url: str, websocket_api: bool, log_path: Path) -> None:
    """`make deploy`, as on AWS, against LocalStack; its output goes to log_path, its tail into the failure.

    Without API Gateway v2 the stack is deployed with WebSocketApi=disabled
    (docs/deploy.md): everything but the order stream's WebSocket API.
    """
    env = {**os.environ, **emulator_env(endpoint_url)}
    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=env["AWS_DEFAULT_REGION"])
    s3.create_bucket(Bucket=BUCKET)
    command = [
        "make",
        "--no-print-directory",
        "deploy",
        f"STAGE={STAGE}",
        f"STACK_NAME={STACK_NAME}",
        f"DEPLOY_BUCKET={BUCKET}",
        f"AWS={AWS_CLI}",
        f"PACKAGE_DIR={PACKAGE_DIR}",
        f"PARAMETERS=ExchangeUrl={exchange_url} WebSocketApi={'enabled' if websocket_api else 'disabled'} "
        # LocalStack community has no WAFv2: the API's per-address rule stays out (docs/deploy.md).
        f"WebAcl={'enabled' if service_ready(endpoint_url, 'wafv2') else 'disabled'}",
    ]
    with log_path.open("wb") as log:
        # A session of its own: on timeout the whole group goes (make, chalice, the AWS CLI), not make alone.
        deploy = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode = deploy.wait(timeout=DEPLOY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(deploy.pid, signal.SIGKILL)
            deploy.wait()
            returncode = -signal.SIGKILL
    if returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        pytest.fail(f"make deploy failed ({returncode}):\n" + "\n".join(tail))


@pytest.fixture(scope="session")
def deployed(endpoint_url: str, exchange_ports: tuple[int, int], log_dir: Path) -> DeployedStack:
    exchange_url = f"http://{LOOPBACK}:{exchange_ports[0]}"
    websocket_api = websocket_api_supported(endpoint_url)
    make_deploy(endpoint_url, exchange_url, websocket_api, log_dir / "deploy.log")
    cloudformation = boto3.client("cloudformation", endpoint_url=endpoint_url)
    stack = cloudformation.describe_stacks(StackName=STACK_NAME)["Stacks"][0]
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    prefix = outputs["OrdersTableName"].removesuffix("-orders")
    handlers = (
        "api_handler",
        "api_key_authorizer",
        "place_orders",
        "sweep_pending_orders",
        "reconcile_orders",
        "apply_executions",
        "publish_order_events",
        "close_revoked_stream_connections",
        "websocket_connect",
        "websocket_message",
        "websocket_disconnect",
    )
    names = {handler: f"{prefix}-{handler.replace('_', '-')}" for handler in handlers}
    return DeployedStack(endpoint_url, outputs, exchange_url, names, websocket_api)


@pytest.fixture(scope="session")
def bridge(deployed: DeployedStack, exchange: tuple[str, str], log_dir: Path) -> Iterator[ManagedProcess]:
    """The feed bridge (an ECS task on AWS, which LocalStack community lacks) against the deployed stream."""
    _, feed_url = exchange
    env = {
        **os.environ,
        **emulator_env(deployed.endpoint_url),
        **settings_environment(deployed.outputs),
        "EXCHANGE_FEED_URL": feed_url,
        "FEED_ID": f"deploy-test-{uuid.uuid4().hex[:12]}",
        "FEED_LINGER_S": "0.05",
    }
    with (log_dir / "bridge.log").open("wb") as log:
        process = start_bridge(env, log)
        try:
            yield process
        finally:
            process.stop()


@pytest.fixture(scope="session")
def api_keys(deployed: DeployedStack) -> Any:
    """The deployed api-keys table, as `python -m ops keys` uses it."""
    return emulator_api_keys(deployed.endpoint_url, deployed.outputs["ApiKeysTableName"])


@pytest.fixture(scope="session")
def exchange_record(exchange: tuple[str, str]) -> Any:
    """The simulator's own record of an order (by our order id), or None."""
    exchange_url, _ = exchange

    def record(order_id: str) -> dict[str, Any] | None:
        response = requests.get(f"{exchange_url}/admin/orders/{order_id}", timeout=5)
        return None if response.status_code == 404 else dict(response.json())

    return record


def pytest_report_header() -> list[str]:
    return [f"deploying stage {STAGE} as {STACK_NAME} with {AWS_CLI} (python {sys.version.split()[0]})"]
