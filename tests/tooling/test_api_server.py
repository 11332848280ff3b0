"""The local API server (devstack/api_server.py) as a real process: the deployed authorizer's behaviour, emulated,
served over HTTP/1.1 keep-alive by worker processes that never outlive it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from chalicelib.adapters.api_keys import DynamoDBApiKeyRepository, api_key_record_class_for
from chalicelib.entrypoints.auth import INVALID_KEY_MESSAGE, MISSING_KEY_MESSAGE, UNAVAILABLE_MESSAGE
from chalicelib.entrypoints.json_body import MAX_BODY_BYTES
from chalicelib.service.accounts import create_api_key, revoke_api_key
from devstack.api_gateway import EMULATED_RESPONSES, load_gateway_responses
from devstack.api_server import DEFAULT_WORKERS
from devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module

# moto_only: the API server process (authorizer emulation, workers); keys table: test_api_keys_table.
pytestmark = [pytest.mark.integration, pytest.mark.moto_only]

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_PROJECT = Path(__file__).resolve().parent / "api_server_fixture"


def start_server(env: dict[str, str], log: Path) -> tuple[ManagedProcess, str]:
    port = free_port()
    process = ManagedProcess(
        "api",
        python_module("devstack.api_server", "--port", str(port), "--project-dir", str(FIXTURE_PROJECT)),
        # The fixture app imports chalicelib from this repository.
        env={**env, "PYTHONPATH": str(REPO_ROOT), "POWERTOOLS_METRICS_DISABLED": "true"},
        cwd=str(REPO_ROOT),
        ready_url=f"http://{LOOPBACK}:{port}/open",
        stdout=log.open("wb"),
    ).start()
    return process, f"http://{LOOPBACK}:{port}"


@pytest.fixture(scope="module")
def keys(adapter_stack: dict[str, str]) -> DynamoDBApiKeyRepository:
    return DynamoDBApiKeyRepository(api_key_record_class_for(adapter_stack["ApiKeysTableName"]))


@pytest.fixture(scope="module")
def server(adapter_stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {**os.environ, "API_KEYS_TABLE_NAME": adapter_stack["ApiKeysTableName"]}
    process, url = start_server(env, tmp_path_factory.mktemp("api") / "api.log")
    try:
        yield url
    finally:
        process.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_refused(response: requests.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"message": message}


def test_without_a_key_the_route_is_not_called_and_the_answer_says_how_to_send_one(server: str) -> None:
    for method in ("GET", "POST"):
        response = requests.request(method, f"{server}/whoami", timeout=10)
        assert_refused(response, 401, MISSING_KEY_MESSAGE)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.headers["x-amzn-ErrorType"] == "AccessDeniedException"


def test_a_valid_key_in_either_header_reaches_the_route_with_its_account(
    server: str, keys: DynamoDBApiKeyRepository
) -> None:
    created = create_api_key("acme", None, keys)
    key = created.plaintext
    for headers in (bearer(key), {"authorization": f"bEaReR {key}"}, {"x-api-key": key}, {"X-API-KEY": key}):
        response = requests.post(f"{server}/whoami", json={"n": 1}, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        seen = response.json()
        # The contract with the routes: request.context["authorizer"]["account_id"].
        # key_id: which key, for POST /stream/tokens (a token stands for its key, revoked with it).
        assert seen["authorizer"] == {
            "account_id": "acme",
            "scope": "trade",
            "key_id": created.key_id,
            "principalId": "acme",
        }
        assert (seen["method"], seen["body"]) == ("POST", {"n": 1})


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer bk_abcdefghijkl_" + "x" * 43},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"x-api-key": "nope"},
    ],
    ids=["unknown", "malformed", "other scheme", "x-api-key malformed"],
)
def test_a_bad_key_is_a_401_saying_so(server: str, headers: dict[str, str]) -> None:
    assert_refused(requests.get(f"{server}/whoami", headers=headers, timeout=10), 401, INVALID_KEY_MESSAGE)


def test_a_revoked_key_stops_working_at_once(server: str, keys: DynamoDBApiKeyRepository) -> None:
    created = create_api_key("acme", None, keys)
    assert requests.get(f"{server}/whoami", headers=bearer(created.plaintext), timeout=10).status_code == 200
    revoke_api_key(created.key_id, keys)
    response = requests.get(f"{server}/whoami", headers=bearer(created.plaintext), timeout=10)
    assert_refused(response, 401, INVALID_KEY_MESSAGE)


def test_the_authorizer_gets_a_request_event_with_every_header(server: str) -> None:
    response = requests.get(f"{server}/echo/thing-1?x=1", headers={"X-Custom": "yes", "x-api-key": "k"}, timeout=10)
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["thing"] == "thing-1"
    assert seen["authorizer"]["type"] == "REQUEST"
    headers = json.loads(seen["authorizer"]["headers"])
    assert (headers["x-custom"], headers["x-api-key"]) == ("yes", "k")


def test_an_allow_counts_only_for_the_method_arns_it_names(server: str) -> None:
    # The authorizer allows exactly the ARN it was asked for (the real one does,
    # see chalicelib/entrypoints/auth.py) or another method's: the emulation,
    # like API Gateway, lets the request through only in the first case.
    allowed = requests.get(f"{server}/narrow/exact", timeout=10)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["authorizer"]["asked"].endswith("/GET/narrow/exact")
    assert_refused(requests.get(f"{server}/narrow/other-method", timeout=10), 401, "allowed elsewhere only")


def test_routes_without_an_authorizer_and_cors_preflights_need_no_key(server: str) -> None:
    response = requests.get(f"{server}/open", timeout=10)
    assert response.status_code == 200
    assert response.json()["authorizer"] is None
    preflight = requests.options(f"{server}/whoami", timeout=10)
    assert preflight.status_code == 200
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]


def test_binary_bodies_still_reach_the_route_whole(server: str, keys: DynamoDBApiKeyRepository) -> None:
    key = create_api_key("acme", None, keys).plaintext
    payload = bytes(range(256)) * 4
    headers = {**bearer(key), "Content-Type": "application/octet-stream"}
    response = requests.post(f"{server}/bytes", data=payload, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"length": len(payload)}


def test_an_unauthorized_error_and_a_malformed_answer_are_what_api_gateway_makes_of_them(server: str) -> None:
    response = requests.get(f"{server}/refused", timeout=10)
    assert_refused(response, 401, MISSING_KEY_MESSAGE)
    assert response.headers["x-amzn-ErrorType"] == "UnauthorizedException"
    broken = requests.get(f"{server}/broken", timeout=10)
    assert broken.status_code == 500
    assert broken.headers["x-amzn-ErrorType"] == "AuthorizerConfigurationException"


def test_unreadable_keys_are_a_503_not_a_401(
    adapter_stack: dict[str, str], keys: DynamoDBApiKeyRepository, tmp_path: Path
) -> None:
    key = create_api_key("acme", None, keys).plaintext
    env = {
        **os.environ,
        "API_KEYS_TABLE_NAME": adapter_stack["ApiKeysTableName"],
        "AWS_ENDPOINT_URL_DYNAMODB": f"http://{LOOPBACK}:{free_port()}",
    }
    process, url = start_server(env, tmp_path / "api.log")
    try:
        response = requests.get(f"{url}/whoami", headers=bearer(key), timeout=30)
        assert_refused(response, 503, UNAVAILABLE_MESSAGE)
        # A request without a key needs no lookup: still the 401.
        assert_refused(requests.get(f"{url}/whoami", timeout=10), 401, MISSING_KEY_MESSAGE)
    finally:
        process.stop()
    assert "API keys could not be read" in (tmp_path / "api.log").read_text(errors="replace")


def test_the_emulated_responses_are_the_deployed_ones() -> None:
    deployed = json.loads((REPO_ROOT / "infra" / "gateway_responses.json").read_text())
    emulated = load_gateway_responses()
    assert set(emulated) == set(EMULATED_RESPONSES) == set(deployed)
    for response_type, response in emulated.items():
        assert response.status == deployed[response_type]["statusCode"]
        assert response.template == deployed[response_type]["responseTemplates"]["application/json"]


def test_a_burst_of_connections_waits_in_the_queue_instead_of_being_refused(
    adapter_stack: dict[str, str], tmp_path: Path
) -> None:
    """A server that does not accept for a moment still completes 64 connects (socketserver's backlog is 5)."""
    env = {**os.environ, "API_KEYS_TABLE_NAME": adapter_stack["ApiKeysTableName"]}
    process, url = start_server(env, tmp_path / "api.log")
    port = int(url.rsplit(":", 1)[1])
    clients: list[socket.socket] = []
    try:
        process.signal(signal.SIGSTOP)  # accepts nothing now: every connect waits in the kernel's queue
        for _ in range(64):
            client = socket.create_connection((LOOPBACK, port), timeout=2)
            clients.append(client)
        assert len(clients) == 64
    finally:
        process.signal(signal.SIGCONT)
        for client in clients:
            client.close()
        process.stop()


def test_the_server_listens_on_loopback_only() -> None:
    completed = subprocess.run(
        python_module("devstack.api_server", "--host", "0.0.0.0", "--port", "1"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "loopback" in completed.stderr


def live_members(group: int) -> list[int]:
    """The processes of a process group that still run (a zombie has finished; only its parent may reap it)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def wait_until_gone(group: int, deadline_s: float = 30.0) -> list[int]:
    """Poll until no process of the group runs, or the deadline passes; what still runs then."""
    deadline = time.monotonic() + deadline_s
    while (members := live_members(group)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return members


def workers_of(process: ManagedProcess, expected: int = DEFAULT_WORKERS, deadline_s: float = 30.0) -> list[int]:
    """The server's worker processes, once all expected have started (the first answers before the last forks)."""
    deadline = time.monotonic() + deadline_s
    while True:
        workers = [pid for pid in live_members(process.pid) if pid != process.pid]
        if len(workers) >= expected or time.monotonic() > deadline:
            return workers
        time.sleep(0.1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_it_and_its_workers_cleanly(
    adapter_stack: dict[str, str], tmp_path: Path, signum: int
) -> None:
    env = {**os.environ, "API_KEYS_TABLE_NAME": adapter_stack["ApiKeysTableName"]}
    process, _ = start_server(env, tmp_path / "api.log")
    assert process.process is not None
    try:
        assert len(workers_of(process)) == DEFAULT_WORKERS
        # To the server alone, not its group: it must stop its workers itself.
        process.process.send_signal(signum)
        assert process.process.wait(timeout=30) == 0
        assert wait_until_gone(process.pid) == []
    finally:
        process.stop()


def test_its_workers_exit_when_it_is_killed_outright(adapter_stack: dict[str, str], tmp_path: Path) -> None:
    """SIGKILL gives the server no chance to stop its workers: they notice they were orphaned and exit."""
    env = {**os.environ, "API_KEYS_TABLE_NAME": adapter_stack["ApiKeysTableName"]}
    process, _ = start_server(env, tmp_path / "api.log")
    assert process.process is not None
    try:
        workers = workers_of(process)
        assert len(workers) == DEFAULT_WORKERS
        process.process.kill()  # the server only: ManagedProcess.kill would take the whole group
        process.process.wait()
        assert wait_until_gone(process.pid) == []
    finally:
        process.stop()


def test_two_requests_on_one_connection_are_both_answered(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        statuses, sockets, versions = [], [], []
        for _ in range(2):
            connection.request("GET", "/open")
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            versions.append(response.version)
            assert connection.sock is not None
            sockets.append(connection.sock.getsockname())
        assert statuses == [200, 200]
        assert versions == [11, 11]  # HTTP/1.1
        assert sockets[0] == sockets[1]  # the same client socket: the server kept the connection open
    finally:
        connection.close()


def test_64_simultaneous_connects_are_all_answered(server: str) -> None:
    start = threading.Barrier(64)
    answers: list[int | str] = []
    lock = threading.Lock()

    def one() -> None:
        start.wait()
        try:
            answer: int | str = requests.get(f"{server}/open", timeout=60).status_code
        except requests.RequestException as exc:  # a reset or refused connect would show here
            answer = repr(exc)
        with lock:
            answers.append(answer)

    clients = [threading.Thread(target=one) for _ in range(64)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    assert answers == [200] * 64


def test_a_wrong_content_type_is_chalices_415(server: str, keys: DynamoDBApiKeyRepository) -> None:
    key = create_api_key("acme", None, keys).plaintext
    headers = {**bearer(key), "Content-Type": "text/plain"}
    response = requests.post(f"{server}/bytes", data=b"abc", headers=headers, timeout=10)
    assert response.status_code == 415, response.text
    assert response.json() == {"Code": "UnsupportedMediaType", "Message": "Unsupported media type: text/plain"}


def test_a_body_over_the_limit_reaches_the_app_whole_and_gets_its_413(server: str) -> None:
    big = json.dumps({"padding": "x" * (MAX_BODY_BYTES + 1)})
    response = requests.post(f"{server}/parsed", data=big, headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 413, response.text
    assert str(MAX_BODY_BYTES) in response.json()["message"]
    small = requests.post(f"{server}/parsed", json={"b": 1, "a": 2}, timeout=10)
    assert (small.status_code, small.json()) == (200, {"keys": ["a", "b"]})
