"""Pre-trade risk limits end to end: an account with low limits set by the operator gets a 422 naming each limit.

The limits are set as `python -m ops accounts limits` sets them (the accounts
table); market orders are valued at the simulator's reference price, which
the API reads from its GET /reference-prices/{instrument}.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.domain.risk import AccountLimits
from devstack.exchange_sim.fill_plans import reference_price
from devstack.stack import DEMO_ACCOUNT, DEMO_LIMITS, LocalStack
from tests.e2e.helpers import auth

# moto_only: 422s from API logic; the limits table is test_accounts_and_open_orders'.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]

REPO_ROOT = Path(__file__).resolve().parents[2]
ISIN = "US0378331005"
# Low enough to meet with small orders, apart enough to tell which limit refused.
LOW = AccountLimits(max_order_notional=Decimal("5000"), max_open_orders=2, max_order_quantity=100)


@pytest.fixture
def low_limits(stack: LocalStack) -> dict[str, str]:
    """A new account's key headers, the account's limits set low."""
    account = f"risk-{uuid.uuid4().hex[:8]}"
    headers = auth(stack.new_api_key(account))
    stack.set_limits(account, LOW)
    return headers


def post(stack: LocalStack, headers: dict[str, str], **body: Any) -> requests.Response:
    order = {"type": "limit", "side": "buy", "instrument": ISIN, "quantity": 10, "limit_price": 100, **body}
    return requests.post(f"{stack.api_url}/orders", json=order, headers=headers, timeout=30)


def refusal(response: requests.Response, limit: str) -> str:
    assert response.status_code == 422, response.text
    message = str(response.json()["message"])
    assert f"the account's {limit} of" in message, message
    return message


def test_a_limit_order_over_the_notional_limit_is_refused_naming_it(
    stack: LocalStack, low_limits: dict[str, str]
) -> None:
    message = refusal(post(stack, low_limits, quantity=51), "max_order_notional")
    # The price as stored (the request may have quantized it to the tick): 100 or 100.00.
    assert re.search(r"notional 5100(\.0+)? \(limit_price 100(\.0+)? x quantity 51\)", message), message
    assert "of 5000" in message
    assert post(stack, low_limits, quantity=50).status_code == 201  # exactly at the limit


def test_a_market_order_is_valued_at_the_simulator_s_reference_price(
    stack: LocalStack, low_limits: dict[str, str]
) -> None:
    price = reference_price(ISIN)  # what the simulator's /reference-prices/{instrument} answers
    assert LOW.max_order_notional is not None
    over = int(LOW.max_order_notional / price) + 1
    message = refusal(post(stack, low_limits, type="market", limit_price=None, quantity=over), "max_order_notional")
    assert f"reference price {price} of {ISIN} x quantity {over}" in message
    assert post(stack, low_limits, type="market", limit_price=None, quantity=over - 1).status_code == 201


def test_a_quantity_over_the_limit_is_refused_naming_it(stack: LocalStack, low_limits: dict[str, str]) -> None:
    message = refusal(post(stack, low_limits, quantity=101, limit_price=1), "max_order_quantity")
    assert "quantity 101" in message and "of 100" in message


@pytest.mark.usefixtures("runner_paused")
def test_open_orders_over_the_limit_are_refused_and_a_retry_of_one_still_gets_it(
    stack: LocalStack, low_limits: dict[str, str]
) -> None:
    first = post(stack, low_limits, client_order_id="open-1")
    assert first.status_code == 201, first.text
    assert post(stack, low_limits, client_order_id="open-2").status_code == 201
    message = refusal(post(stack, low_limits, client_order_id="open-3"), "max_open_orders")
    assert "2 open orders plus this one" in message and "of 2" in message
    # An idempotent retry of an order already counted is not a new open order: it gets its order.
    again = post(stack, low_limits, client_order_id="open-1")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]


def test_the_demo_account_has_the_stack_s_high_limits(stack: LocalStack) -> None:
    assert stack.limits_of(DEMO_ACCOUNT) == DEMO_LIMITS
    response = post(stack, auth(stack.api_key), type="market", limit_price=None, quantity=20_000)
    assert response.status_code == 201, response.text


def run_ops(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m ops` as a real process, as an operator runs it against the stack."""
    return subprocess.run(
        [sys.executable, "-m", "ops", *args],
        env=stack.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard, not a performance bound
        check=False,
    )


def test_the_operator_tool_sets_and_shows_limits_with_defaults_marked(stack: LocalStack) -> None:
    account = f"ops-risk-{uuid.uuid4().hex[:8]}"
    headers = auth(stack.new_api_key(account))
    shown = run_ops(stack, "accounts", "limits", "--account", account, "--json")
    assert shown.returncode == 0, shown.stderr
    assert all(limit["default"] for limit in json.loads(shown.stdout)["limits"].values())

    changed = run_ops(stack, "accounts", "limits", "--account", account, "--max-order-quantity", "7", "--json")
    assert changed.returncode == 0, changed.stderr
    limits = json.loads(changed.stdout)["limits"]
    assert limits["max_order_quantity"] == {"value": "7", "default": False}
    assert limits["max_open_orders"]["default"] and limits["max_order_notional"]["default"]
    assert stack.limits_of(account) == AccountLimits(max_order_quantity=7)

    text = run_ops(stack, "accounts", "limits", "--account", account)
    assert text.returncode == 0, text.stderr
    assert re.search(r"max_order_quantity\s+7\n", text.stdout), text.stdout
    assert re.search(r"max_open_orders\s+\d+  \(default\)", text.stdout), text.stdout

    refusal(post(stack, headers, quantity=8, limit_price=1), "max_order_quantity")  # the API applies it

    refused = run_ops(stack, "accounts", "limits", "--account", account, "--max-order-notional", "0")
    assert refused.returncode == 2 and "max_order_notional" in refused.stderr
    assert stack.limits_of(account) == AccountLimits(max_order_quantity=7)
