"""Repeated cancels end to end (issue 15): a client looping on DELETE sends one exchange cancel per interval."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from devstack.stack import LocalStack
from tests.e2e.helpers import Exchange, auth, order_in_status
from tests.polling import wait_until

# moto_only: the resend interval is the cancel service's rule; the cancel's queue path is test_list_and_cancel's.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]

ISIN = "US0378331005"
LOOP_S = 12.0  # a little over two intervals at the default CANCEL_RESEND_INTERVAL_S


def interval_s(stack: LocalStack) -> float:
    return float(stack.env.get("CANCEL_RESEND_INTERVAL_S", "5"))  # chalicelib/config.py's default


def cancel_requests(exchange: Exchange, order_id: str) -> int:
    record = exchange.record(order_id)
    assert record is not None
    return int(record["cancel_requests"])


def test_a_loop_of_deletes_sends_one_exchange_cancel_per_interval(stack: LocalStack, exchange: Exchange) -> None:
    # A limit order that stays live at the exchange through the test: its
    # reports (fills included) are planned a minute or more away.
    exchange.configure(limit_ttl_s=300, exec_delay_s=60, reject_rate=0, cancel_rate=0)
    headers = auth(stack.api_key)
    body: dict[str, Any] = {"type": "limit", "side": "buy", "instrument": ISIN, "quantity": 10, "limit_price": 1.0}
    created = requests.post(f"{stack.api_url}/orders", json=body, headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    wait_until(order_in_status(stack, order_id, "placed"), timeout_s=30)

    # Every cancel call now fails at the exchange (and is counted there): the
    # order stays pending_cancel, and the worker keeps asking, as a loop of
    # DELETEs would have it ask once per DELETE before.
    exchange.configure(failure_rate=1.0)
    url = f"{stack.api_url}/orders/{order_id}"
    started = time.monotonic()
    deletes = 0
    with requests.Session() as session:
        session.headers.update(headers)
        while time.monotonic() - started < LOOP_S:
            response = session.delete(url, timeout=10)
            assert response.status_code == 202, response.text  # every repeat is answered as before
            assert response.json()["status"] == "pending_cancel"
            deletes += 1
            time.sleep(0.05)
    sent = cancel_requests(exchange, order_id)
    elapsed = time.monotonic() - started
    assert deletes >= 50, deletes
    # At most one per interval since the first DELETE (the first goes out at once).
    assert 1 <= sent <= int(elapsed / interval_s(stack)) + 1, (sent, deletes, elapsed)

    # The exchange answers again: the cancel still goes through, nothing was lost.
    exchange.configure(failure_rate=0.0)
    done = wait_until(order_in_status(stack, order_id, "canceled", "filled"), timeout_s=90)
    assert done["status"] == "canceled", done
    assert exchange.record(order_id)["canceled_by_request"] == 1  # type: ignore[index]
