"""API keys end to end: the running stack's authorizer, and `python -m ops keys` creating and revoking keys."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.processes import ManagedProcess, free_port
from devstack.stack import LocalStack, start_api
from tests.e2e.helpers import auth

# moto_only: the authorizer's answers and `ops keys`; the keys table is test_api_keys_table's.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]

REPO_ROOT = Path(__file__).resolve().parents[2]
MISSING = {"message": "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"}
INVALID = {"message": "Invalid or revoked API key"}
UNAVAILABLE = {"message": "Authentication is temporarily unavailable, retry later"}
ORDER = {"type": "market", "side": "buy", "instrument": "US0378331005", "quantity": 1}
# Every order route, with an id that exists nowhere: past the authorizer each is a 404 (or 201 for POST).
ROUTES = [
    ("POST", "/orders"),
    ("GET", "/orders"),
    ("GET", "/orders/{unknown}"),
    ("DELETE", "/orders/{unknown}"),
    ("GET", "/orders/{unknown}/executions"),
]


def call(stack: LocalStack, method: str, path: str, headers: dict[str, str] | None = None) -> requests.Response:
    url = stack.api_url + path.format(unknown=uuid.uuid4())
    body = ORDER if method == "POST" else None
    return requests.request(method, url, json=body, headers=headers or {}, timeout=30)


def assert_401(response: requests.Response, body: dict[str, str]) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == body
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def ops_keys(stack: LocalStack, *args: str, expect: int = 0) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "ops", "keys", *args, "--json"],
        env=stack.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == expect, f"exit {completed.returncode}\n{completed.stdout}\n{completed.stderr}"
    return dict(json.loads(completed.stdout)) if completed.stdout else {}


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_order_route_without_a_key_is_a_401_saying_how_to_send_one(
    stack: LocalStack, method: str, path: str
) -> None:
    assert_401(call(stack, method, path), MISSING)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_with_the_demo_key_every_order_route_is_reached(stack: LocalStack, method: str, path: str) -> None:
    response = call(stack, method, path, auth(stack.api_key))
    assert response.status_code not in (401, 403), response.text


def test_bad_keys_are_a_401(stack: LocalStack) -> None:
    key_id = stack.api_key.split("_")[1]
    for headers in (
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Basic {stack.api_key}"},
        {"Authorization": stack.api_key},  # the scheme is missing
        {"x-api-key": "bk_abcdefghijkl_" + "A" * 43},  # well-formed, unknown
        {"x-api-key": f"bk_{key_id}_" + "A" * 43},  # a real key id with a wrong secret
        {"Authorization": f"Bearer {stack.api_key}", "x-api-key": stack.new_api_key("other")},  # two keys
    ):
        assert_401(call(stack, "GET", "/orders/{unknown}", headers), INVALID)


def test_both_headers_work_in_any_case(stack: LocalStack) -> None:
    key = stack.new_api_key(f"headers-{uuid.uuid4().hex[:8]}")
    for headers in (
        {"Authorization": f"Bearer {key}"},
        {"authorization": f"bearer {key}"},
        {"x-api-key": key},
        {"X-Api-Key": key},
    ):
        response = requests.post(f"{stack.api_url}/orders", json=ORDER, headers=headers, timeout=30)
        assert response.status_code == 201, (headers, response.text)


def test_a_revoked_key_is_refused_from_the_next_request_and_the_others_go_on(stack: LocalStack) -> None:
    account = f"revoke-{uuid.uuid4().hex[:8]}"
    key, other = stack.new_api_key(account), stack.new_api_key(account)
    assert call(stack, "GET", "/orders", auth(key)).status_code == 200
    stack.revoke_api_key(key)
    assert_401(call(stack, "GET", "/orders", auth(key)), INVALID)
    assert_401(call(stack, "GET", "/orders", {"x-api-key": key}), INVALID)
    assert call(stack, "GET", "/orders", auth(other)).status_code == 200


def test_ops_creates_a_key_that_works_and_revokes_it(stack: LocalStack) -> None:
    account = f"ops-{uuid.uuid4().hex[:8]}"
    created = ops_keys(stack, "create", "--account", account, "--label", "e2e")
    assert (created["action"], created["account_id"], created["label"]) == ("created", account, "e2e")
    key = created["api_key"]
    assert key.startswith(f"bk_{created['key_id']}_")
    assert call(stack, "POST", "/orders", auth(key)).status_code == 201

    revoked = ops_keys(stack, "revoke", created["key_id"])
    assert (revoked["action"], revoked["account_id"]) == ("revoked", account)
    assert_401(call(stack, "GET", "/orders", auth(key)), INVALID)
    # Idempotent: the first revocation time stays.
    again = ops_keys(stack, "revoke", key)  # the whole key names its key id too
    assert (again["action"], again["revoked_at"]) == ("already revoked", revoked["revoked_at"])


def test_ops_refuses_bad_input_and_unknown_keys(stack: LocalStack) -> None:
    unknown = ops_keys(stack, "revoke", "zzzzzzzzzzzz", expect=1)
    assert "no API key zzzzzzzzzzzz" in unknown["error"]
    for args in (("create", "--account", "Not_An_Account"), ("create",), ("revoke", "nope")):
        ops_keys(stack, *args, expect=2)


def test_the_docs_need_no_key(stack: LocalStack) -> None:
    for path in ("/openapi.json", "/docs", "/docs/swagger-ui-bundle.js"):
        assert requests.get(f"{stack.api_url}{path}", timeout=30).status_code == 200, path


def test_dynamodb_unreachable_is_a_503_not_a_401(stack: LocalStack, tmp_path: Path) -> None:
    port = free_port()
    env = {**stack.env, "AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{free_port()}"}
    api: ManagedProcess = start_api(port, env, (tmp_path / "api.log").open("wb"))
    try:
        response = requests.get(f"http://127.0.0.1:{port}/orders", headers=auth(stack.api_key), timeout=30)
        assert response.status_code == 503, response.text
        assert response.json() == UNAVAILABLE
        # Nothing to look up without a key: that is still the 401.
        assert_401(requests.get(f"http://127.0.0.1:{port}/orders", timeout=30), MISSING)
    finally:
        api.stop()
