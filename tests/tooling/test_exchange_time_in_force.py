"""Time in force and stop orders at the simulator as a real process: reports on its feed, its status query, its record.

The knobs and endpoints here are the ones an end-to-end test uses to force each behaviour
(docs/emulators.md): limit_outcome, session_length_s, limit_ttl_s, price_step_bps and
POST /admin/prices/{instrument}.
"""

from __future__ import annotations

import datetime
import math
from decimal import Decimal
from typing import Any

import pytest
import requests

from tests.tooling.simulator_support import (
    HTTP_TIMEOUT_S,
    Simulator,
    all_terminal,
    check_reports_of_one_order,
    configure,
    feed,
    next_seq,
    of_order,
    place,
    receive_until,
    simulator_fixtures,
    wait_done,
)

pytestmark = pytest.mark.integration

INSTRUMENT = "AAPL"
# The simulator's wall clock and the test's are one machine's, but the expiry is due on the
# scheduler's monotonic clock: allow the two a little slack where a report's time is compared.
CLOCK_SLACK = datetime.timedelta(milliseconds=50)


# The price path holds still unless a test sets it (or lets it walk).
shared_sim, sim = simulator_fixtures("exchange-tif", price_step_bps=0)


def reports_until_done(sim: Simulator, start: int, *client_order_ids: str) -> list[dict[str, Any]]:
    with feed(sim, start) as connection:
        return receive_until(connection, all_terminal(client_order_ids))


def exec_types(reports: list[dict[str, Any]], client_order_id: str) -> list[str]:
    return [report["exec_type"] for report in of_order(reports, client_order_id)]


def transact_time(report: dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(report["transact_time"])


def status(sim: Simulator, client_order_id: str) -> dict[str, Any]:
    response = sim.status(client_order_id)
    assert response.status_code == 200, response.text
    return dict(response.json())


def current_price(sim: Simulator, instrument: str = INSTRUMENT) -> Decimal:
    response = sim.get(f"/admin/prices/{instrument}")
    assert response.status_code == 200, response.text
    return Decimal(response.json()["price"])


def set_price(sim: Simulator, price: Decimal, instrument: str = INSTRUMENT) -> dict[str, Any]:
    response = sim.post(f"/admin/prices/{instrument}", {"price": float(price)})
    assert response.status_code == 200, response.text
    return dict(response.json())


# --- ioc and fok ---


def test_ioc_fills_what_it_can_at_once_then_the_rest_is_canceled(sim: Simulator) -> None:
    configure(sim, limit_outcome="partial")
    start = next_seq(sim)
    client_order_id = place(sim, quantity=100, time_in_force="ioc")

    reports = of_order(reports_until_done(sim, start, client_order_id), client_order_id)

    check_reports_of_one_order(reports, 100)
    types = [report["exec_type"] for report in reports]
    assert types[0] == "new"
    assert types[-1] == "canceled"
    assert set(types[1:-1]) == {"partial_fill"}
    assert 0 < reports[-1]["cum_qty"] < 100
    assert (status(sim, client_order_id)["status"], status(sim, client_order_id)["leaves_qty"]) == ("canceled", 0)


def test_a_market_ioc_fills_completely(sim: Simulator) -> None:
    configure(sim, limit_outcome="rest")
    start = next_seq(sim)
    client_order_id = place(sim, type="market", limit_price=None, quantity=40, time_in_force="ioc")

    reports = of_order(reports_until_done(sim, start, client_order_id), client_order_id)

    check_reports_of_one_order(reports, 40)
    assert reports[-1]["exec_type"] == "fill"


def test_fok_that_can_fill_fills_completely_in_one_execution(sim: Simulator) -> None:
    configure(sim, limit_outcome="fill")
    start = next_seq(sim)
    client_order_id = place(sim, quantity=70, time_in_force="fok")

    reports = of_order(reports_until_done(sim, start, client_order_id), client_order_id)

    check_reports_of_one_order(reports, 70)
    assert [(report["exec_type"], report["last_qty"]) for report in reports] == [("new", 0), ("fill", 70)]
    assert status(sim, client_order_id)["status"] == "filled"


@pytest.mark.parametrize("outcome", ["rest", "partial"])
def test_fok_that_cannot_fill_completely_is_canceled_with_no_fill(sim: Simulator, outcome: str) -> None:
    configure(sim, limit_outcome=outcome)
    start = next_seq(sim)
    client_order_id = place(sim, quantity=70, time_in_force="fok")

    reports = of_order(reports_until_done(sim, start, client_order_id), client_order_id)

    assert [report["exec_type"] for report in reports] == ["new", "canceled"]
    assert (reports[-1]["cum_qty"], reports[-1]["leaves_qty"], reports[-1]["avg_price"]) == (0, 0, None)
    assert status(sim, client_order_id)["status"] == "canceled"


# --- day, gtd, gtc ---


def test_a_resting_day_order_expires_at_the_session_close(sim: Simulator) -> None:
    length_s = 2.0
    configure(sim, limit_outcome="rest", session_length_s=length_s, limit_ttl_s=None)
    start = next_seq(sim)
    before = datetime.datetime.now(datetime.UTC)
    client_order_id = place(sim)

    reports = of_order(reports_until_done(sim, start, client_order_id), client_order_id)

    assert [report["exec_type"] for report in reports] == ["new", "expired"]
    # Not before the first close after the order was placed: sessions close at whole multiples of their length.
    close = datetime.datetime.fromtimestamp(math.floor(before.timestamp() / length_s + 1) * length_s, datetime.UTC)
    assert transact_time(reports[-1]) >= close - CLOCK_SLACK
    assert status(sim, client_order_id)["status"] == "expired"


def test_limit_ttl_still_ends_day_limit_orders_early(sim: Simulator) -> None:
    # What the e2e stack and chaos runs rely on: limit orders over within a second or so.
    configure(sim, limit_outcome="rest", limit_ttl_s=0.3)
    start = next_seq(sim)
    client_order_id = place(sim)

    assert exec_types(reports_until_done(sim, start, client_order_id), client_order_id) == ["new", "expired"]


def test_a_gtd_order_expires_at_its_time_and_a_gtc_order_rests(sim: Simulator) -> None:
    configure(sim, limit_outcome="rest", limit_ttl_s=0.1, session_length_s=1.0)
    expires_at = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)).replace(microsecond=0)
    start = next_seq(sim)
    gtc = place(sim, time_in_force="gtc")
    gtd = place(sim, time_in_force="gtd", expires_at=expires_at.isoformat().replace("+00:00", "Z"))

    reports = of_order(reports_until_done(sim, start, gtd), gtd)

    assert [report["exec_type"] for report in reports] == ["new", "expired"]
    assert transact_time(reports[-1]) >= expires_at - CLOCK_SLACK
    # Neither the TTL nor the session closes that passed meanwhile end a gtc order.
    assert status(sim, gtc)["status"] == "new"
    assert sim.record(gtd).json()["order"]["expires_at"] == expires_at.isoformat().replace("+00:00", "Z")


# --- stop orders ---


@pytest.mark.parametrize(
    ("side", "offset", "changes"),
    [
        ("buy", Decimal("1.00"), {"type": "stop", "limit_price": None}),
        ("sell", Decimal("-1.00"), {"type": "stop_limit"}),
    ],
    ids=["buy-stop", "sell-stop-limit"],
)
def test_a_stop_rests_untriggered_until_the_price_reaches_it(
    sim: Simulator, side: str, offset: Decimal, changes: dict[str, Any]
) -> None:
    configure(sim, limit_outcome="fill")
    price = current_price(sim)
    stop_price = price + offset
    if changes["type"] == "stop_limit":
        changes = {**changes, "limit_price": float(stop_price - 1)}
    start = next_seq(sim)
    client_order_id = place(sim, side=side, stop_price=float(stop_price), time_in_force="gtc", quantity=30, **changes)
    with feed(sim, start) as connection:
        acknowledged = receive_until(connection, lambda reports: len(of_order(reports, client_order_id)) >= 1)
        assert exec_types(acknowledged, client_order_id) == ["new"]
        assert status(sim, client_order_id)["status"] == "new"
        assert sim.record(client_order_id).json()["trigger_price"] is None
        # A step short of the stop, on the side it comes from: nothing.
        assert set_price(sim, price + offset / 2)["triggered"] == []

        answer = set_price(sim, stop_price)
        reports = receive_until(connection, all_terminal([client_order_id]))

    assert answer["triggered"] == [client_order_id]
    assert answer["price"] == str(stop_price)
    own = of_order(acknowledged + reports, client_order_id)
    check_reports_of_one_order(own, 30)
    assert own[-1]["exec_type"] == "fill"
    assert sim.record(client_order_id).json()["trigger_price"] == str(stop_price)
    assert status(sim, client_order_id)["status"] == "filled"
    if changes["type"] == "stop_limit":
        assert all(Decimal(report["last_price"]) >= stop_price - 1 for report in own[1:])


def test_the_walking_price_triggers_a_stop(sim: Simulator) -> None:
    configure(sim, price_tick_s=0.05, price_step_bps=300)
    stop_price = (current_price(sim) * Decimal("1.01")).quantize(Decimal("0.01"))
    start = next_seq(sim)
    client_order_id = place(sim, type="stop", limit_price=None, stop_price=float(stop_price), time_in_force="gtc")

    reports = of_order(reports_until_done(sim, start, client_order_id), client_order_id)

    assert reports[-1]["exec_type"] == "fill"
    assert Decimal(sim.record(client_order_id).json()["trigger_price"]) >= stop_price


def test_a_canceled_stop_never_triggers(sim: Simulator) -> None:
    stop_price = current_price(sim) + 1
    start = next_seq(sim)
    client_order_id = place(sim, type="stop", limit_price=None, stop_price=float(stop_price))
    # Canceled once watched: from its `new` on the venue watches its price (a cancel before
    # would never meet the watch).
    with feed(sim, start) as connection:
        receive_until(connection, lambda reports: "new" in exec_types(reports, client_order_id))

    response = sim.delete(f"/orders/{client_order_id}")
    triggered = set_price(sim, stop_price + 1)["triggered"]

    assert response.status_code == 200
    assert triggered == []
    assert wait_done(sim, [client_order_id])[client_order_id]["status"] == "canceled"


def test_an_untriggered_day_stop_expires_at_the_session_close(sim: Simulator) -> None:
    configure(sim, session_length_s=1.0)
    start = next_seq(sim)
    client_order_id = place(sim, type="stop", limit_price=None, stop_price=float(current_price(sim) + 1))

    assert exec_types(reports_until_done(sim, start, client_order_id), client_order_id) == ["new", "expired"]


# --- the price endpoint ---


def test_a_path_starts_at_the_reference_price_and_reset_starts_it_again(sim: Simulator) -> None:
    reference = sim.get(f"/reference-prices/{INSTRUMENT}").json()["price"]
    assert sim.get(f"/admin/prices/{INSTRUMENT}").json() == {
        "instrument": INSTRUMENT,
        "price": reference,
        "reference_price": reference,
        "triggered": [],
    }
    set_price(sim, Decimal("12.34"))
    assert current_price(sim) == Decimal("12.34")

    assert sim.post("/admin/reset").status_code == 200

    assert str(current_price(sim)) == reference


@pytest.mark.parametrize(
    "body",
    [
        '{"price": 0}',
        '{"price": -1}',
        '{"price": "12.34"}',
        '{"price": 12.345}',
        '{"cost": 1}',
        "[12]",
        "twelve",
        # Numbers no float (or 28-digit decimal) holds: 400, not a crash.
        '{"price": 1' + "0" * 400 + "}",
        '{"price": 1e300}',
    ],
)
def test_a_bad_price_is_400_and_changes_nothing(sim: Simulator, body: str) -> None:
    before = current_price(sim)

    response = requests.post(
        f"{sim.url}/admin/prices/{INSTRUMENT}",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=HTTP_TIMEOUT_S,
    )

    assert response.status_code == 400
    assert "price" in response.json()["error"]
    assert current_price(sim) == before
