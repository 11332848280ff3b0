"""Per-account rate limits end to end (issue 17): set with the operator tool, held by the local API server over HTTP.

An account over its limit gets 429 `{"message": "Too many requests: ..."}` with Retry-After after its burst, while
another account at the same time is not held back at all; the demo account's limit is far above anything the tests,
benchmarks or chaos runs send.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.domain.rate_limits import DEFAULT_RATE_LIMIT
from devstack.stack import DEMO_ACCOUNT, DEMO_RATE_LIMIT, LocalStack
from tests.e2e.helpers import auth

# moto_only: the API server's buckets; their table is test_account_rate_limits_table's.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]

REPO_ROOT = Path(__file__).resolve().parents[2]
# Requests the flooding account sends: far more than its burst plus what refills while they are
# answered, however slow the machine (each takes a few ms to a few hundred).
FLOOD = 120


def ops(stack: LocalStack, *args: str) -> dict[str, Any]:
    """`python -m ops` with the stack's environment, as an operator would run it; its JSON answer."""
    completed = subprocess.run(
        [sys.executable, "-m", "ops", *args, "--json"],
        env=stack.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard, not a performance bound
        check=False,
    )
    assert completed.returncode == 0, f"exit {completed.returncode}\n{completed.stdout}\n{completed.stderr}"
    return dict(json.loads(completed.stdout))


def test_an_account_over_its_limit_gets_429_with_retry_after_and_another_at_the_same_time_does_not(
    stack: LocalStack,
) -> None:
    slow, other = f"slow-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    slow_key, other_key = stack.new_api_key(slow), stack.new_api_key(other)
    # Before the account's first request, so every API worker reads this limit on its first one.
    set_ = ops(stack, "keys", "rate-limit", "--account", slow, "--rate", "1", "--burst", "3")
    assert (set_["action"], set_["rate"], set_["burst"], set_["default"]) == ("set", 1, 3, False)
    assert set_["api_gateway"] is None  # a local stack: no API Gateway to put the key into a usage plan of
    shown = ops(stack, "keys", "rate-limit", "--account", other)
    default = (DEFAULT_RATE_LIMIT.rate, DEFAULT_RATE_LIMIT.burst, True)
    assert (shown["rate"], shown["burst"], shown["default"]) == default

    slow_answers: list[requests.Response] = []
    other_statuses: list[int] = []

    def flood() -> None:
        with requests.Session() as session:
            for _ in range(FLOOD):
                slow_answers.append(session.get(f"{stack.api_url}/orders", headers=auth(slow_key), timeout=30))

    def meanwhile() -> None:
        # Well within the default burst (50): none of these may be refused, whatever the other account does.
        with requests.Session() as session:
            for _ in range(20):
                answer = session.get(f"{stack.api_url}/orders", headers=auth(other_key), timeout=30)
                other_statuses.append(answer.status_code)

    threads = [threading.Thread(target=flood), threading.Thread(target=meanwhile)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = [answer.status_code for answer in slow_answers]
    assert set(statuses) == {200, 429}, statuses
    assert statuses[:3] == [200, 200, 200]  # the burst: a new account's bucket is full
    throttled = next(answer for answer in slow_answers if answer.status_code == 429)
    assert throttled.headers["Content-Type"] == "application/json"
    retry_after = throttled.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    body = throttled.json()
    assert list(body) == ["message"] and body["message"].startswith("Too many requests: ")
    assert other_statuses == [200] * 20

    # Retry-After later there is a token again.
    time.sleep(int(retry_after))
    assert requests.get(f"{stack.api_url}/orders", headers=auth(slow_key), timeout=30).status_code == 200


def test_the_demo_account_that_tests_and_benchmarks_use_has_a_limit_no_load_test_here_reaches(
    stack: LocalStack,
) -> None:
    assert stack.rate_limit_of(DEMO_ACCOUNT) == DEMO_RATE_LIMIT
    assert DEMO_RATE_LIMIT.rate >= 1_000 and DEMO_RATE_LIMIT.burst >= DEMO_RATE_LIMIT.rate
    shown = ops(stack, "keys", "rate-limit", "--account", DEMO_ACCOUNT)
    assert (shown["rate"], shown["burst"]) == (DEMO_RATE_LIMIT.rate, DEMO_RATE_LIMIT.burst)
    # 64 at once, as bench/ sends them: none is refused.
    start = threading.Barrier(64)
    statuses: list[int] = []

    def one() -> None:
        start.wait()
        statuses.append(requests.get(f"{stack.api_url}/orders", headers=auth(stack.api_key), timeout=60).status_code)

    clients = [threading.Thread(target=one) for _ in range(64)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    assert statuses == [200] * 64
