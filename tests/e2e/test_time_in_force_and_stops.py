"""Time in force and stop orders end to end (issue 17): each behaviour the exchange simulator gives them, seen
through the API.

Every order here is created by POST /orders, placed by the runner's placement worker, and worked by the
simulator, whose reports come back through the feed bridge, Kinesis and the execution consumer. Each test makes
the simulator behave one way (the recipes of docs/emulators.md, "Time in force and stop orders", each with venue
rejects and cancels off so that nothing else ends the order first) and then checks that the order's final state
(GET /orders/{id}) is the simulator's own record (GET /admin/orders/{id}), that its executions are exactly the
reports the simulator sent, and that the outcome is the one the time in force or the stop calls for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from functools import partial
from typing import Any

import pytest
import requests

from devstack.stack import LocalStack
from devstack.stream_client import Account, new_account
from tests.e2e.helpers import Exchange
from tests.polling import wait_until

# moto_only: the simulator's own time in force and stops; the order path is test_orders' and test_executions'.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]

# One instrument for the time in force tests, and one for each stop test: a stop test sets its instrument's
# price, which stays so on the simulator's path for the rest of the session (other files use other ISINs).
ISIN = "DE0005557508"
BUY_STOP_ISIN = "FR0000120271"
SELL_STOP_ISIN = "CH0038863350"
# Venue rejects and cancels would end an order before the behaviour under test does.
NO_VENUE_ENDINGS = {"reject_rate": 0.0, "cancel_rate": 0.0}
# Two shared cores under a CI run: the way through bridge, Kinesis and consumer can take a while.
SETTLE_TIMEOUT_S = 90.0
PLACED_TIMEOUT_S = 60.0
FILL_TYPES = {"partial_fill", "fill"}
# The simulator says "new" where we say "placed"; the rest is spelled alike.
OUR_STATUS = {"new": "placed"}
CENT = Decimal("0.01")


@pytest.fixture
def account(stack: LocalStack) -> Account:
    """An account of its own: its event log holds only this test's orders."""
    return new_account(stack, "tif")


def settled(account: Account, exchange: Exchange, order_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Our order and the exchange's record, once the exchange is done with it and ours says the same; else None."""
    record = exchange.record(order_id)
    execution = (record or {}).get("execution")
    if record is None or execution is None or not execution["done"]:
        return None
    ours = account.order(order_id)
    expected_price = None if execution["avg_price"] is None else float(Decimal(execution["avg_price"]))
    agrees = (
        ours["status"] == OUR_STATUS.get(execution["status"], execution["status"])
        and ours["filled_quantity"] == execution["cum_qty"]
        and ours["average_fill_price"] == expected_price
    )
    return (ours, record) if agrees else None


def executions_as_sent(account: Account, exchange: Exchange, order_id: str) -> list[dict[str, Any]] | None:
    """The order's executions once they are exactly the reports the exchange's feed carried, else None.

    Not necessarily at once when the order agrees: the reconciler may settle an order from the
    exchange's status answer before its reports arrive; they follow.
    """
    record = exchange.record(order_id) or {}
    executions = account.executions(order_id)
    sent = (record.get("execution") or {}).get("exec_ids")
    return executions if [e["id"] for e in executions] == sent else None


def settle(account: Account, exchange: Exchange, order_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Our final order (equal to the exchange's record) and its executions (the ones the exchange sent)."""
    ours, _ = wait_until(partial(settled, account, exchange, order_id), timeout_s=SETTLE_TIMEOUT_S)
    executions = wait_until(partial(executions_as_sent, account, exchange, order_id), timeout_s=SETTLE_TIMEOUT_S)
    return ours, executions


def record_of(exchange: Exchange, order_id: str) -> dict[str, Any]:
    """The exchange's record of an order it is known to have."""
    record = exchange.record(order_id)
    assert record is not None, f"the exchange has no record of {order_id}"
    return record


def filled_by(executions: list[dict[str, Any]]) -> list[int]:
    return [e["quantity"] for e in executions if e["type"] in FILL_TYPES]


def placed_at_the_exchange(account: Account, exchange: Exchange, order_id: str) -> dict[str, Any] | None:
    """The exchange's record once it has acknowledged the order (`new`) and our order shows it placed; else None."""
    record = exchange.record(order_id)
    execution = (record or {}).get("execution")
    if record is None or execution is None or execution["status"] != "new":
        return None
    return record if account.order(order_id)["status"] == "placed" else None


def limit_near(isin: str, exchange: Exchange, side: str = "buy") -> float:
    """A limit 2% through the instrument's reference price: the simulator's fills (within 0.5%) all respect it."""
    reference = Decimal(requests.get(f"{exchange.url}/admin/prices/{isin}", timeout=5).json()["reference_price"])
    factor = Decimal("1.02") if side == "buy" else Decimal("0.98")
    return float((reference * factor).quantize(CENT))


def current_price(exchange: Exchange, isin: str) -> Decimal:
    return Decimal(requests.get(f"{exchange.url}/admin/prices/{isin}", timeout=5).json()["price"])


def set_price(exchange: Exchange, isin: str, price: Decimal) -> list[str]:
    """Set the instrument's price on the simulator's path; the ids of the stop orders it triggered."""
    response = requests.post(f"{exchange.url}/admin/prices/{isin}", json={"price": float(price)}, timeout=5)
    response.raise_for_status()
    return list(response.json()["triggered"])


def events_until_expired(account: Account, order_id: str) -> list[dict[str, Any]] | None:
    """The order's events in the account's log (GET /events) once one of them is `expired`, else None."""
    events = [e for e in account.all_events() if e["order"]["id"] == order_id]
    return events if any(e["type"] == "expired" for e in events) else None


def in_seconds(seconds: int) -> str:
    """A moment that many whole seconds ahead, as ISO 8601 UTC (the API keeps expires_at to the whole second)."""
    moment = (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def test_ioc_fills_what_it_finds_at_once_and_cancels_the_rest(account: Account, exchange: Exchange) -> None:
    exchange.configure(**NO_VENUE_ENDINGS, limit_outcome="partial")
    order = account.post_order(
        type="limit", instrument=ISIN, quantity=10, limit_price=limit_near(ISIN, exchange), time_in_force="ioc"
    )
    assert order["time_in_force"] == "ioc"

    final, executions = settle(account, exchange, order["id"])
    assert final["status"] == "canceled"
    assert 0 < final["filled_quantity"] < 10
    assert final["time_in_force"] == "ioc"
    # Acknowledged, filled in part, and the rest canceled: nothing rests at the venue after an ioc.
    assert executions[0]["type"] == "new"
    assert executions[-1]["type"] == "canceled"
    assert sum(filled_by(executions)) == final["filled_quantity"]


@pytest.mark.parametrize(
    ("kind", "changes", "limit_outcome"),
    [
        ("limit, fillable", {"type": "limit"}, "fill"),
        ("market", {"type": "market"}, "rest"),  # a market fok always finds enough, whatever limit orders do
        ("limit, not fillable", {"type": "limit"}, "rest"),
        ("limit, only partly fillable", {"type": "limit"}, "partial"),
    ],
)
def test_fok_fills_completely_or_is_canceled_with_no_fill(
    account: Account, exchange: Exchange, kind: str, changes: dict[str, Any], limit_outcome: str
) -> None:
    exchange.configure(**NO_VENUE_ENDINGS, limit_outcome=limit_outcome)
    if changes["type"] == "limit":
        changes = {**changes, "limit_price": limit_near(ISIN, exchange)}
    order = account.post_order(instrument=ISIN, quantity=6, time_in_force="fok", **changes)

    final, executions = settle(account, exchange, order["id"])
    if kind == "market" or limit_outcome == "fill":
        assert (final["status"], final["filled_quantity"]) == ("filled", 6), kind
        assert filled_by(executions) == [6], kind  # all at once: one fill of the whole quantity
    else:
        assert (final["status"], final["filled_quantity"]) == ("canceled", 0), kind
        assert filled_by(executions) == [], kind
        assert final["average_fill_price"] is None
        assert [e["type"] for e in executions] == ["new", "canceled"], kind


def test_a_day_order_expires_at_the_session_close(account: Account, exchange: Exchange) -> None:
    # Sessions of 2 s, and no TTL: the session close, nothing else, ends the resting order.
    exchange.configure(**NO_VENUE_ENDINGS, limit_outcome="rest", limit_ttl_s=None, session_length_s=2)
    order = account.post_order(type="limit", instrument=ISIN, quantity=4, limit_price=limit_near(ISIN, exchange))
    assert order["time_in_force"] == "day"  # the default

    final, executions = settle(account, exchange, order["id"])
    assert (final["status"], final["filled_quantity"]) == ("expired", 0)
    assert [e["type"] for e in executions] == ["new", "expired"]


def test_a_gtd_order_expires_at_its_expires_at_and_the_event_log_says_so(account: Account, exchange: Exchange) -> None:
    exchange.configure(**NO_VENUE_ENDINGS, limit_outcome="rest")
    # A few seconds ahead: still in the future when the API checks it, even on a loaded machine.
    expires_at = in_seconds(8)
    order = account.post_order(
        type="limit",
        instrument=ISIN,
        quantity=3,
        limit_price=limit_near(ISIN, exchange),
        time_in_force="gtd",
        expires_at=expires_at,
    )

    final, executions = settle(account, exchange, order["id"])
    assert (final["status"], final["filled_quantity"]) == ("expired", 0)
    assert final["time_in_force"] == "gtd"
    assert datetime.fromisoformat(final["expires_at"]) == datetime.fromisoformat(expires_at)
    assert [e["type"] for e in executions] == ["new", "expired"]
    # The expiry is an event of the account's log like any other ending, the order in it as it ended; the log
    # follows the orders table's stream, so it may come a little after the order shows it.
    events = wait_until(partial(events_until_expired, account, order["id"]), timeout_s=SETTLE_TIMEOUT_S)
    assert events[0]["type"] == "created"
    assert events[-1]["type"] == "expired"
    assert events[-1]["order"]["status"] == "expired"
    assert events[-1]["order"]["time_in_force"] == "gtd"


def test_a_buy_stop_rests_until_the_price_reaches_it_then_fills(account: Account, exchange: Exchange) -> None:
    # The price holds still: nothing but the price this test sets can trigger the stop.
    exchange.configure(**NO_VENUE_ENDINGS, price_step_bps=0)
    stop_price = (current_price(exchange, BUY_STOP_ISIN) * Decimal("1.02")).quantize(CENT, rounding=ROUND_UP)
    order = account.post_order(
        type="stop", instrument=BUY_STOP_ISIN, quantity=5, stop_price=float(stop_price), time_in_force="gtc"
    )
    assert (order["type"], order["stop_price"]) == ("stop", float(stop_price))

    record = wait_until(partial(placed_at_the_exchange, account, exchange, order["id"]), timeout_s=PLACED_TIMEOUT_S)
    assert record["trigger_price"] is None  # acknowledged, but below its stop: not triggered

    assert order["id"] in set_price(exchange, BUY_STOP_ISIN, stop_price)
    final, executions = settle(account, exchange, order["id"])
    assert (final["status"], final["filled_quantity"]) == ("filled", 5)
    assert Decimal(record_of(exchange, order["id"])["trigger_price"]) == stop_price
    assert final["stop_price"] == float(stop_price)
    assert executions[0]["type"] == "new"
    assert executions[-1]["type"] == "fill"
    assert sum(filled_by(executions)) == 5


def test_a_sell_stop_the_price_does_not_reach_stays_placed_until_canceled(account: Account, exchange: Exchange) -> None:
    exchange.configure(**NO_VENUE_ENDINGS, price_step_bps=0)
    stop_price = (current_price(exchange, SELL_STOP_ISIN) * Decimal("0.95")).quantize(CENT, rounding=ROUND_DOWN)
    # gtc: a day order would end at the session close whatever the price did.
    order = account.post_order(
        type="stop",
        side="sell",
        instrument=SELL_STOP_ISIN,
        quantity=5,
        stop_price=float(stop_price),
        time_in_force="gtc",
    )
    wait_until(partial(placed_at_the_exchange, account, exchange, order["id"]), timeout_s=PLACED_TIMEOUT_S)

    # A cent above the stop: a sell stop triggers only at or below it.
    assert order["id"] not in set_price(exchange, SELL_STOP_ISIN, stop_price + CENT)
    record = record_of(exchange, order["id"])
    assert (record["execution"]["status"], record["trigger_price"]) == ("new", None)
    still = account.order(order["id"])
    assert (still["status"], still["filled_quantity"]) == ("placed", 0)

    # Leave nothing open: canceled, with nothing filled, as the exchange records it.
    response = account.session.delete(f"{account.api_url}/orders/{order['id']}", timeout=30)
    assert response.status_code == 202, response.text  # placed: the cancel goes to the exchange
    final, executions = settle(account, exchange, order["id"])
    assert (final["status"], final["filled_quantity"]) == ("canceled", 0)
    assert [e["type"] for e in executions] == ["new", "canceled"]
    assert record_of(exchange, order["id"])["canceled_by_request"] == 1
