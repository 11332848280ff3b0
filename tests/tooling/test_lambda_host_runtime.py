"""The host Lambda runtime (devstack/localstack_lambda/.../bootstrap.py) against a stand-in for LocalStack's endpoint.

`make test-deploy` runs it under LocalStack; here the protocol runs in
seconds under `make test`: a real bootstrap process on loopback, a real HTTP
server in LocalStack's place recording what the runtime posts.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.localstack_lambda.brokerage_lambda_host.command import runtime_command, runtime_environment
from devstack.processes import LOOPBACK, free_port, wait_for_http

pytestmark = pytest.mark.integration

RUNTIME_ID = "runtime-1"
HANDLERS = """
import sys
print("imported handlers")


def echo(event, context):
    print("echo called")
    return {
        "event": event,
        "function_name": context.function_name,
        "request_id": context.aws_request_id,
        "remaining_ms_positive": context.get_remaining_time_in_millis() > 0,
    }


def boom(event, context):
    raise ValueError("boom: " + str(event))


def exits(event, context):
    sys.exit(3)


def importable(event, context):
    import importlib.util
    return {name: importlib.util.find_spec(name) is not None for name in event}
"""


class FakeLocalStack:
    """Records (path, JSON body) of every POST the runtime makes to its endpoint."""

    def __init__(self) -> None:
        self.posts: queue.Queue[tuple[str, Any]] = queue.Queue()
        posts = self.posts

        class Recorder(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                posts.put((self.path, json.loads(body or b"null")))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Recorder)
        self.endpoint = f"http://{LOOPBACK}:{self.server.server_address[1]}/_localstack_lambda/{RUNTIME_ID}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next_post(self) -> tuple[str, Any]:
        return self.posts.get(timeout=20)


@pytest.fixture
def fake_localstack() -> Iterator[FakeLocalStack]:
    fake = FakeLocalStack()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def start_runtime(
    tmp_path: Path, endpoint: str, handler: str, parent_pid: int | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """The runtime exactly as the executor starts it (command.py), with LocalStack's variables for one function."""
    code = tmp_path / "task"
    code.mkdir(exist_ok=True)
    (code / "handlers.py").write_text(HANDLERS)
    port = free_port()
    log_path = tmp_path / "runtime.log"
    localstack_variables = {
        "LOCALSTACK_RUNTIME_ENDPOINT": endpoint,
        "LOCALSTACK_RUNTIME_ID": RUNTIME_ID,
        "_HANDLER": handler,
        "AWS_LAMBDA_FUNCTION_NAME": "test-function",
        "AWS_LAMBDA_FUNCTION_TIMEOUT": 5,
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            runtime_command(sys.executable, port, log_path, os.getpid() if parent_pid is None else parent_pid),
            env=runtime_environment(localstack_variables, code, tmp_path),
            cwd=code,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, port


@pytest.fixture
def runtime(tmp_path: Path, fake_localstack: FakeLocalStack, request: pytest.FixtureRequest) -> Iterator[int]:
    """A started runtime for the handler the test names (indirect parametrisation); yields its port."""
    process, port = start_runtime(tmp_path, fake_localstack.endpoint, request.param)
    try:
        assert fake_localstack.next_post() == (f"/_localstack_lambda/{RUNTIME_ID}/status/{RUNTIME_ID}/ready", {})
        wait_for_http(f"http://{LOOPBACK}:{port}/", process=process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def invoke(port: int, request_id: str, payload: Any) -> None:
    body = {"invoke-id": request_id, "invoked-function-arn": "arn:aws:lambda:us-east-1:000000000000:function:f"}
    response = requests.post(
        f"http://{LOOPBACK}:{port}/invoke", json={**body, "payload": json.dumps(payload), "trace-id": "Root=1-a-b"}
    )
    assert response.status_code == 202


@pytest.mark.parametrize("runtime", ["handlers.echo"], indirect=True)
def test_an_invocation_posts_its_logs_then_its_result(runtime: int, fake_localstack: FakeLocalStack) -> None:
    invoke(runtime, "req-1", {"a": 1})
    logs_path, logs = fake_localstack.next_post()
    assert logs_path.endswith("/invocations/req-1/logs")
    assert "START RequestId: req-1" in logs["logs"] and "echo called" in logs["logs"]
    # As in a Lambda log stream, what the import printed comes before the first START.
    assert logs["logs"].index("imported handlers") < logs["logs"].index("START RequestId: req-1")
    assert fake_localstack.next_post() == (
        f"/_localstack_lambda/{RUNTIME_ID}/invocations/req-1/response",
        {"event": {"a": 1}, "function_name": "test-function", "request_id": "req-1", "remaining_ms_positive": True},
    )
    # One environment, many invocations: the next one gets only its own lines.
    invoke(runtime, "req-2", None)
    _, logs = fake_localstack.next_post()
    assert "req-2" in logs["logs"] and "req-1" not in logs["logs"] and "imported" not in logs["logs"]
    assert fake_localstack.next_post()[1]["event"] is None


@pytest.mark.parametrize("runtime", ["handlers.boom"], indirect=True)
def test_a_raised_error_is_the_invocations_error_and_the_runtime_goes_on(
    runtime: int, fake_localstack: FakeLocalStack
) -> None:
    for request_id in ("req-1", "req-2"):
        invoke(runtime, request_id, request_id)
        fake_localstack.next_post()  # logs
        path, error = fake_localstack.next_post()
        assert path.endswith(f"/invocations/{request_id}/error")
        assert error["errorType"] == "ValueError"
        assert error["errorMessage"] == f"boom: {request_id}"
        assert error["stackTrace"]


@pytest.mark.parametrize("runtime", ["handlers.importable"], indirect=True)
def test_the_function_sees_its_package_and_the_standard_library_only(
    runtime: int, fake_localstack: FakeLocalStack
) -> None:
    # boto3, pytest and devstack are in this test's environment, never in the function's.
    invoke(runtime, "req-1", ["handlers", "json", "boto3", "pytest", "devstack"])
    fake_localstack.next_post()
    _, importable = fake_localstack.next_post()
    assert importable == {"handlers": True, "json": True, "boto3": False, "pytest": False, "devstack": False}


def test_an_import_error_is_reported_as_the_environments_startup_error(
    tmp_path: Path, fake_localstack: FakeLocalStack
) -> None:
    process, _ = start_runtime(tmp_path, fake_localstack.endpoint, "no_such_module.handler")
    try:
        path, error = fake_localstack.next_post()
        assert path == f"/_localstack_lambda/{RUNTIME_ID}/status/{RUNTIME_ID}/error"
        assert error["errorType"] == "ModuleNotFoundError"
        assert process.wait(timeout=10) == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("runtime", ["handlers.exits"], indirect=True)
def test_a_handler_that_exits_ends_the_runtime_without_an_answer(runtime: int, fake_localstack: FakeLocalStack) -> None:
    """As a Lambda runtime that exits: the executor sees the process gone and fails the invocation."""
    invoke(runtime, "req-1", None)
    with pytest.raises(queue.Empty):
        fake_localstack.posts.get(timeout=3)
    with pytest.raises(requests.ConnectionError):
        requests.post(f"http://{LOOPBACK}:{runtime}/invoke", json={}, timeout=5)


def test_a_runtime_whose_localstack_is_gone_stops_at_once(tmp_path: Path, fake_localstack: FakeLocalStack) -> None:
    process, _ = start_runtime(tmp_path, fake_localstack.endpoint, "handlers.echo", parent_pid=1)
    try:
        assert process.wait(timeout=20) != 0
        assert fake_localstack.posts.empty()  # never reported ready
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_no_bytecode_is_written_into_the_deployed_code(tmp_path: Path, fake_localstack: FakeLocalStack) -> None:
    process, _ = start_runtime(tmp_path, fake_localstack.endpoint, "handlers.echo")
    try:
        assert fake_localstack.next_post()[0].endswith("/ready")
        assert not list((tmp_path / "task").rglob("__pycache__"))
    finally:
        process.terminate()
        process.wait(timeout=10)
