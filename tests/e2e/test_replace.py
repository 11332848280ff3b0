"""Replace (PATCH /orders/{id}) end to end (issue 17): confirmed by the exchange, too late, and racing a cancel.

Every order is created by POST /orders and placed by the runner; the replacement is sent by the runner's
placement worker as the simulator's cancel/replace (POST /orders/{orig}/replace); the `replaced` report and the
replacement's reports come back through the feed bridge, Kinesis and the execution consumer. Each test ends with
our orders equal to the simulator's own records (GET /admin/orders/{id}).
"""

from __future__ import annotations

import signal
from functools import partial
from typing import Any

import pytest
import requests

from devstack.stack import LocalStack
from devstack.stream_client import Account, new_account
from tests.e2e.helpers import Exchange
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

ISIN = "NL0010273215"
# Nothing but the behaviour under test ends an order: no venue rejects or cancels, and limit orders rest.
RESTING = {"reject_rate": 0.0, "cancel_rate": 0.0, "limit_ttl_s": None}
SETTLE_TIMEOUT_S = 90.0
OUR_STATUS = {"new": "placed"}


@pytest.fixture
def account(stack: LocalStack) -> Account:
    return new_account(stack, "replace")


def limit_price(exchange: Exchange) -> float:
    """2% above the reference price: a buy limit every simulated fill respects."""
    reference = float(requests.get(f"{exchange.url}/admin/prices/{ISIN}", timeout=5).json()["reference_price"])
    return round(reference * 1.02, 2)


def patch(account: Account, order_id: str, **changes: Any) -> requests.Response:
    return account.session.patch(f"{account.api_url}/orders/{order_id}", json=changes, timeout=30)


def agrees_with_exchange(account: Account, exchange: Exchange, order_id: str) -> dict[str, Any] | None:
    """Our order once its status and fills are the exchange's record of it (whatever that is now), else None."""
    execution = (exchange.record(order_id) or {}).get("execution")
    if execution is None:
        return None
    ours = account.order(order_id)
    same = (
        ours["status"] == OUR_STATUS.get(execution["status"], execution["status"])
        and ours["filled_quantity"] == execution["cum_qty"]
    )
    return ours if same else None


def event_types_once_replaced(account: Account, order_id: str) -> list[str] | None:
    types = [e["type"] for e in account.all_events() if e["order"]["id"] == order_id]
    return types if "replaced" in types else None


def done_at_the_exchange(exchange: Exchange, order_id: str) -> bool:
    execution = (exchange.record(order_id) or {}).get("execution") or {}
    return bool(execution.get("done"))


def in_status(account: Account, order_id: str, *statuses: str) -> dict[str, Any] | None:
    order = account.order(order_id)
    return order if order["status"] in statuses else None


def test_a_confirmed_replace_replaces_the_original_and_the_replacement_carries_its_fills(
    account: Account, exchange: Exchange
) -> None:
    exchange.configure(**RESTING, limit_outcome="partial")
    original = account.post_order(
        type="limit", instrument=ISIN, quantity=10, limit_price=limit_price(exchange), time_in_force="gtc"
    )
    wait_until(partial(in_status, account, original["id"], "partially_filled"), timeout_s=SETTLE_TIMEOUT_S)

    answer = patch(account, original["id"], quantity=15, client_order_id=f"r-{original['id'][:8]}")
    assert answer.status_code == 202, answer.text
    replacement = answer.json()
    assert (replacement["status"], replacement["replaces"], replacement["quantity"]) == ("pending", original["id"], 15)
    assert account.order(original["id"])["replaced_by"] == replacement["id"]

    replaced = wait_until(partial(in_status, account, original["id"], "replaced"), timeout_s=SETTLE_TIMEOUT_S)
    assert replaced["replaced_by"] == replacement["id"]
    old_record = exchange.record(original["id"])
    assert old_record is not None and old_record["execution"]["status"] == "replaced"
    assert replaced["filled_quantity"] == old_record["execution"]["cum_qty"]
    # The replacement at the exchange: its own order, sent as a cancel/replace of the original.
    new_record = exchange.record(replacement["id"])
    assert new_record is not None and new_record["orig_client_order_id"] == original["id"]
    settled = wait_until(
        partial(agrees_with_exchange, account, exchange, replacement["id"]), timeout_s=SETTLE_TIMEOUT_S
    )
    # FIX's cancel/replace: the replacement's quantity is the new total, the original's fills counted in it.
    assert settled["filled_quantity"] >= replaced["filled_quantity"]
    assert settled["replaces"] == original["id"]
    # The event log follows the orders table's stream: a moment behind.
    events = wait_until(partial(event_types_once_replaced, account, original["id"]), timeout_s=SETTLE_TIMEOUT_S)
    assert events[-2:] == ["pending_replace", "replaced"], events
    # Idempotent by its key, even now that the original is replaced.
    again = patch(account, original["id"], quantity=15, client_order_id=f"r-{original['id'][:8]}")
    assert (again.status_code, again.json()["id"]) == (200, replacement["id"])


def test_a_replace_too_late_rejects_the_replacement_and_the_original_ends_as_the_exchange_has_it(
    account: Account, exchange: Exchange, stack: LocalStack
) -> None:
    # The fill comes seconds after the acceptance: time to freeze the runner while our order shows placed.
    exchange.configure(**RESTING, limit_outcome="fill", exec_delay_s=3.0)
    original = account.post_order(type="limit", instrument=ISIN, quantity=4, limit_price=limit_price(exchange))
    wait_until(partial(in_status, account, original["id"], "placed"), timeout_s=SETTLE_TIMEOUT_S)
    runner = stack.process("runner")
    runner.signal(signal.SIGSTOP)
    try:
        # Filled at the exchange, its reports not yet applied here: ours still says placed.
        wait_until(partial(done_at_the_exchange, exchange, original["id"]), timeout_s=SETTLE_TIMEOUT_S)
        answer = patch(account, original["id"], quantity=8)
        assert answer.status_code == 202, answer.text
    finally:
        runner.signal(signal.SIGCONT)
    replacement = answer.json()

    rejected = wait_until(partial(in_status, account, replacement["id"], "rejected"), timeout_s=SETTLE_TIMEOUT_S)
    assert rejected["failure_reason"] == "too late to replace"
    filled = wait_until(partial(agrees_with_exchange, account, exchange, original["id"]), timeout_s=SETTLE_TIMEOUT_S)
    assert (filled["status"], filled["filled_quantity"], filled["replaced_by"]) == ("filled", 4, None)
    # The exchange counted the refusal and holds no order under the replacement's id.
    record = exchange.record(original["id"])
    assert record is not None and record["replaces_too_late"] >= 1
    assert (exchange.record(replacement["id"]) or {}).get("exchange_order_id") is None


def test_a_cancel_racing_a_replace_ends_as_the_exchange_decided(account: Account, exchange: Exchange) -> None:
    exchange.configure(**RESTING, limit_outcome="rest")
    original = account.post_order(
        type="limit", instrument=ISIN, quantity=5, limit_price=limit_price(exchange), time_in_force="gtc"
    )
    wait_until(partial(agrees_with_exchange, account, exchange, original["id"]), timeout_s=SETTLE_TIMEOUT_S)

    replace = patch(account, original["id"], quantity=6)
    cancel = account.session.delete(f"{account.api_url}/orders/{original['id']}", timeout=30)
    assert replace.status_code == 202, replace.text
    assert cancel.status_code == 202, cancel.text  # pending_cancel overtakes pending_replace
    replacement = replace.json()

    old = wait_until(partial(in_status, account, original["id"], "canceled", "replaced"), timeout_s=SETTLE_TIMEOUT_S)
    old_record = exchange.record(original["id"])
    assert old_record is not None and old_record["execution"]["status"] == old["status"]
    if old["status"] == "replaced":
        # The replace reached the exchange first: the replacement works on (the cancel was too late for it).
        new = wait_until(
            partial(agrees_with_exchange, account, exchange, replacement["id"]), timeout_s=SETTLE_TIMEOUT_S
        )
        assert new["status"] == "placed"
    else:
        new = wait_until(partial(in_status, account, replacement["id"], "rejected"), timeout_s=SETTLE_TIMEOUT_S)
        assert new["failure_reason"] == "too late to replace"
        assert old["replaced_by"] is None
