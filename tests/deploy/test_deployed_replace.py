"""A replace through the deployed stack: the packaged PATCH route, its DynamoDB transaction, and the mappings.

The deployed api_handler stores the replacement and the original's pending_replace in one transaction (on
LocalStack's DynamoDB), the deployed place_orders sends the cancel/replace to the simulator through the SQS
mapping, and the simulator's `replaced` report comes back through the bridge and the Kinesis mapping.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from chalicelib.service.accounts import create_api_key
from tests.deploy.support import DeployedStack, allowed_context, authorize, call_api, proxy_event
from tests.polling import wait_until

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(420)]

ISIN = "NL0000235190"
# Limit orders rest until replaced: no fill, no expiry ends them first.
RESTING = {"limit_outcome": "rest", "limit_ttl_s": None}


@pytest.fixture
def resting_orders(exchange: tuple[str, str]) -> Iterator[str]:
    url = exchange[0]
    before = requests.get(f"{url}/admin/config", timeout=5).json()
    requests.post(f"{url}/admin/config", json=RESTING, timeout=5).raise_for_status()
    yield url
    requests.post(f"{url}/admin/config", json={name: before[name] for name in RESTING}, timeout=5)


def test_a_replace_through_the_deployed_stack_replaces_the_original(
    deployed: DeployedStack, api_keys: Any, bridge: Any, exchange_record: Any, resting_orders: str
) -> None:
    key = create_api_key("deploy-replace", "deploy test", api_keys).plaintext
    context = allowed_context(authorize(deployed, {"Authorization": f"Bearer {key}"}))

    def order(order_id: str) -> dict[str, Any]:
        event = proxy_event(deployed.api_id, "GET", "/orders/{order_id}", {"order_id": order_id}, authorizer=context)
        status, current = call_api(deployed, event)
        assert status == 200, current
        return dict(current)

    body = {"type": "limit", "side": "buy", "instrument": ISIN, "quantity": 5, "limit_price": 10.0}
    status, original = call_api(
        deployed, proxy_event(deployed.api_id, "POST", "/orders", body=body, authorizer=context)
    )
    assert status == 201, original
    wait_until(lambda: order(original["id"])["status"] == "placed" or None, timeout_s=120, interval_s=2)

    event = proxy_event(
        deployed.api_id, "PATCH", "/orders/{order_id}", {"order_id": original["id"]}, {"quantity": 8}, context
    )
    status, replacement = call_api(deployed, event)
    assert status == 202, replacement
    assert (replacement["replaces"], replacement["status"]) == (original["id"], "pending")

    replaced = wait_until(lambda: order(original["id"])["status"] == "replaced" or None, timeout_s=120, interval_s=2)
    assert replaced
    assert order(original["id"])["replaced_by"] == replacement["id"]
    record = exchange_record(replacement["id"])
    assert record is not None and record["orig_client_order_id"] == original["id"]
    assert record["order"]["quantity"] == 8
    placed = wait_until(lambda: order(replacement["id"])["status"] == "placed" or None, timeout_s=120, interval_s=2)
    assert placed
