"""API key scopes, expiry and last use end to end: the running stack's API and `python -m ops keys`.

Keys are made as an operator makes them (`ops keys create`), except the
expired one: no operator can issue a key that is expired already, so that
one is written through the adapter with a creation time in the past.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.domain.accounts import issue_key
from devstack.stack import LocalStack, emulator_api_keys
from tests.e2e.helpers import auth

# moto_only: scopes, expiry, last use are authorizer rules; the keys table is test_api_keys_table's.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]

REPO_ROOT = Path(__file__).resolve().parents[2]
ORDER = {"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": 1, "limit_price": 1.0}
INVALID = {"message": "Invalid or revoked API key"}


def ops_keys(stack: LocalStack, *args: str, as_json: bool = True) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, "-m", "ops", "keys", *args, *(["--json"] if as_json else [])],
        env=stack.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard
        check=False,
    )
    assert completed.returncode == 0, f"exit {completed.returncode}\n{completed.stdout}\n{completed.stderr}"
    return completed


def create_key(stack: LocalStack, account: str, *args: str) -> dict[str, Any]:
    return dict(json.loads(ops_keys(stack, "create", "--account", account, *args).stdout))


def listed_keys(stack: LocalStack, account: str) -> dict[str, dict[str, Any]]:
    answer = json.loads(ops_keys(stack, "list", "--account", account).stdout)
    assert answer["account_id"] == account
    return {key["key_id"]: key for key in answer["keys"]}


def api(stack: LocalStack, method: str, path: str, key: str, body: Any = None) -> requests.Response:
    return requests.request(method, f"{stack.api_url}{path}", json=body, headers=auth(key), timeout=30)


def test_a_read_key_reads_and_is_refused_with_a_403_on_post_and_delete(stack: LocalStack) -> None:
    account = f"scope-{uuid.uuid4().hex[:8]}"
    trade = create_key(stack, account, "--label", "trading bot")
    read = create_key(stack, account, "--scope", "read", "--expires-in", "30d", "--label", "dashboard")
    assert (trade["scope"], trade["expires_at"]) == ("trade", None)
    assert read["scope"] == "read"
    expires_at = datetime.fromisoformat(read["expires_at"])
    assert timedelta(days=29, hours=23) < expires_at - datetime.now(UTC) <= timedelta(days=30)

    placed = api(stack, "POST", "/orders", trade["api_key"], ORDER)
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]

    # Reads work as with any key of the account.
    for path in ("/orders", f"/orders/{order_id}", f"/orders/{order_id}/executions"):
        response = api(stack, "GET", path, read["api_key"])
        assert response.status_code == 200, (path, response.text)
    assert order_id in {order["id"] for order in api(stack, "GET", "/orders", read["api_key"]).json()["orders"]}

    # Writes are a 403 saying why, from the API (not the gateway's 401 for a bad key).
    refused_post = api(stack, "POST", "/orders", read["api_key"], ORDER)
    refused_delete = api(stack, "DELETE", f"/orders/{order_id}", read["api_key"])
    for response, method in ((refused_post, "POST"), (refused_delete, "DELETE")):
        assert response.status_code == 403, response.text
        assert response.headers["Content-Type"] == "application/json"
        message = response.json()["message"]
        assert "read-only" in message and method in message
        assert set(response.json()) == {"message"}
    # Nothing happened: no new order, and the order was not asked to cancel.
    listed = api(stack, "GET", "/orders", trade["api_key"]).json()["orders"]
    assert [order["id"] for order in listed] == [order_id]
    assert api(stack, "GET", f"/orders/{order_id}", trade["api_key"]).json()["status"] != "pending_cancel"


def test_an_expired_key_is_a_401_like_a_revoked_one(stack: LocalStack) -> None:
    account = f"expired-{uuid.uuid4().hex[:8]}"
    keys = emulator_api_keys(stack.endpoint_url, stack.resources["ApiKeysTableName"])
    now = datetime.now(UTC)
    expired = issue_key(account, now - timedelta(hours=2), expires_in=timedelta(hours=1))
    live = issue_key(account, now - timedelta(hours=2), expires_in=timedelta(days=1))
    keys.add(expired.key)
    keys.add(live.key)
    for method, body in (("GET", None), ("POST", ORDER)):
        response = api(stack, method, "/orders", expired.plaintext, body)
        assert response.status_code == 401, response.text
        assert response.json() == INVALID
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert api(stack, "GET", "/orders", live.plaintext).status_code == 200
    states = {key["key_id"]: key["state"] for key in listed_keys(stack, account).values()}
    assert states == {expired.key.key_id: "expired", live.key.key_id: "active"}


def test_the_last_use_is_recorded_and_not_rewritten_within_a_minute(stack: LocalStack) -> None:
    account = f"used-{uuid.uuid4().hex[:8]}"
    created = create_key(stack, account)
    key_id = created["key_id"]
    assert listed_keys(stack, account)[key_id]["last_used_at"] is None

    before = datetime.now(UTC)
    assert api(stack, "GET", "/orders", created["api_key"]).status_code == 200
    first = listed_keys(stack, account)[key_id]["last_used_at"]
    assert first is not None
    assert before - timedelta(seconds=1) <= datetime.fromisoformat(first) <= datetime.now(UTC)

    for _ in range(5):
        assert api(stack, "GET", "/orders", created["api_key"]).status_code == 200
    assert listed_keys(stack, account)[key_id]["last_used_at"] == first


def test_ops_lists_an_accounts_keys_without_any_secret(stack: LocalStack) -> None:
    account = f"list-{uuid.uuid4().hex[:8]}"
    bidi = "desk \u202eevil"  # a right-to-left override: must not reorder the operator's terminal
    first = create_key(stack, account, "--label", bidi)
    second = create_key(stack, account, "--scope", "read", "--expires-in", "12h")
    ops_keys(stack, "revoke", first["key_id"])
    create_key(stack, f"{account}-other")

    listed = listed_keys(stack, account)
    assert list(listed) == [first["key_id"], second["key_id"]]  # oldest first, the other account's not at all
    one, two = listed[first["key_id"]], listed[second["key_id"]]
    assert (one["label"], one["scope"], one["state"], one["expires_at"]) == (bidi, "trade", "revoked", None)
    assert one["revoked_at"] is not None and one["created_at"] is not None
    assert (two["label"], two["scope"], two["state"], two["revoked_at"]) == (None, "read", "active", None)
    assert two["expires_at"] == second["expires_at"]
    expected = {"key_id", "label", "scope", "state", "created_at", "expires_at", "last_used_at", "revoked_at"}
    assert set(one) == set(two) == expected

    text = ops_keys(stack, "list", "--account", account, as_json=False).stdout
    for created in (first, second):
        assert created["key_id"] in text
        secret = created["api_key"].split("_", 2)[2]
        assert secret not in text
    assert "\u202e" not in text and "desk \\u202eevil" in text
    assert "read" in text and "revoked" in text
