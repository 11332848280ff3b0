"""Venue authentication end to end: the stack's simulator demands the credential from the stack's secret, and
orders still go through, entered with it and their fills delivered over a feed opened with it."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from devstack.emulator import emulator_client
from devstack.stack import LocalStack
from devstack.venue_credential import SECRET_NAME_VARIABLE
from tests.e2e.helpers import Exchange, auth, order_in_status
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

ISIN = "US0378331005"
TIMEOUT_S = 10


def venue_order(client_order_id: str) -> dict[str, Any]:
    return {
        "client_order_id": client_order_id,
        "instrument": ISIN,
        "side": "buy",
        "type": "market",
        "quantity": 1,
        "limit_price": None,
    }


def stack_credential(stack: LocalStack) -> str:
    """The credential as the functions and the bridge read it: the stack's secret on the emulator."""
    secrets = emulator_client("secretsmanager", stack.endpoint_url)
    return str(secrets.get_secret_value(SecretId=stack.env[SECRET_NAME_VARIABLE])["SecretString"])


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer guessed"}], ids=["missing", "wrong"])
def test_the_stacks_venue_refuses_a_missing_or_wrong_credential(stack: LocalStack, headers: dict[str, str]) -> None:
    entered = requests.post(
        f"{stack.exchange_url}/orders", json=venue_order("not-ours-1"), headers=headers, timeout=TIMEOUT_S
    )
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{stack.feed_url}?from_seq=1", additional_headers=headers, open_timeout=TIMEOUT_S)

    assert entered.status_code == 401
    assert refused.value.response.status_code == 401


def test_the_stacks_secret_is_the_credential_the_venue_accepts(stack: LocalStack) -> None:
    credential = stack_credential(stack)

    with connect(
        f"{stack.feed_url}?from_seq=1",
        additional_headers={"Authorization": f"Bearer {credential}"},
        open_timeout=TIMEOUT_S,
    ):
        pass  # the handshake succeeded: that is the check
    assert len(credential) >= 32  # a generated value, not a placeholder


def test_an_order_is_placed_and_filled_through_the_authenticated_venue(stack: LocalStack, exchange: Exchange) -> None:
    body = {"type": "market", "side": "buy", "instrument": ISIN, "quantity": 5, "limit_price": None}
    created = requests.post(f"{stack.api_url}/orders", json=body, headers=auth(stack.api_key), timeout=30)
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]

    filled = wait_until(order_in_status(stack, order_id, "filled", "failed"))
    # Only the feed (the bridge's authenticated connection) brings executions; the reconciler corrects statuses only.
    executions = wait_until(lambda: _executions(stack, order_id))

    assert filled["status"] == "filled"
    record = exchange.record(order_id)
    assert record is not None
    assert record["accepted"] == 1
    assert sum(execution["quantity"] for execution in executions) == 5


def _executions(stack: LocalStack, order_id: str) -> list[dict[str, Any]] | None:
    listed = requests.get(f"{stack.api_url}/orders/{order_id}/executions", headers=auth(stack.api_key), timeout=10)
    executions: list[dict[str, Any]] = listed.json()["executions"]
    filled = sum(execution.get("quantity") or 0 for execution in executions)
    return executions if filled == 5 else None
