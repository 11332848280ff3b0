"""Cancel/replace (POST /orders/{orig}/replace, FIX 35=G) at the simulator as a real process, over HTTP.

A partly filled original is made with the knobs (limit_outcome "partial", one partial fill
at most, gtc so that nothing expires it) and found with the test-only /admin/orders view.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.tooling.simulator_support import (
    DEADLINE_S,
    NO_REPLACES,
    REPORT_FIELDS,
    Simulator,
    configure,
    logged,
    new_id,
    next_seq,
    of_order,
    order,
    place,
    simulator_fixtures,
    vwap,
    wait_done,
)

pytestmark = pytest.mark.integration

# Prices hold still, and no TTL ends a resting order before the test replaces it.
shared_sim, sim = simulator_fixtures("exchange-replace", price_step_bps=0, limit_ttl_s=None)


def replace(sim: Simulator, orig_client_order_id: str, body: dict[str, Any]) -> requests.Response:
    return sim.post(f"/orders/{quote(orig_client_order_id, safe='')}/replace", body)


def record(sim: Simulator, client_order_id: str) -> dict[str, Any]:
    response = sim.record(client_order_id)
    assert response.status_code == 200, response.text
    return dict(response.json())


def replace_counts(view: dict[str, Any]) -> dict[str, int]:
    return {key: view[key] for key in NO_REPLACES}


def partly_filled(sim: Simulator, terms: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """A live gtc limit order of 100 (or these terms) with one partial fill and nothing more to come; its record."""
    configure(sim, limit_outcome="partial", max_partial_fills=1)
    client_order_id = place(sim, **{"quantity": 100, "time_in_force": "gtc", **(terms or {})})
    deadline = time.monotonic() + DEADLINE_S
    while True:
        view = record(sim, client_order_id)
        execution = view["execution"]
        if execution is not None and execution["status"] == "partially_filled":
            return client_order_id, view
        assert time.monotonic() < deadline, f"no partial fill within {DEADLINE_S}s: {view}"
        time.sleep(0.02)


def resting(sim: Simulator) -> str:
    """A live order that stays live, not even acknowledged: no step of it comes before the test's request."""
    configure(sim, exec_delay_s=30.0)
    return place(sim, quantity=100, time_in_force="gtc")


def test_a_replace_ends_the_original_and_carries_its_fills_over(sim: Simulator) -> None:
    start = next_seq(sim)
    original, before = partly_filled(sim)
    filled = before["execution"]["cum_qty"]
    assert 0 < filled < 100
    # The replacement finds everything it asks for, so its quantities can be added up.
    configure(sim, limit_outcome="fill", max_partial_fills=3)
    replacement = new_id()

    response = replace(sim, original, order(replacement, {"quantity": 150, "time_in_force": "gtc"}))

    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer == {
        "client_order_id": replacement,
        "exchange_order_id": answer["exchange_order_id"],
        "status": "new",
        "orig_client_order_id": original,
    }
    assert answer["exchange_order_id"] not in (None, before["exchange_order_id"])
    wait_done(sim, [replacement])
    reports = logged(sim, start)
    old, new = of_order(reports, original), of_order(reports, replacement)
    assert all(set(report) == REPORT_FIELDS for report in old + new)
    assert [report["exec_type"] for report in old] == ["new", "partial_fill", "replaced"]
    ended = old[-1]
    assert (ended["last_qty"], ended["last_price"], ended["cum_qty"], ended["leaves_qty"]) == (0, None, filled, 0)
    assert ended["avg_price"] == old[1]["avg_price"]
    # The replacement: its own exchange order id, `new` right after the original's end, carrying its fills.
    assert {report["exchange_order_id"] for report in new} == {answer["exchange_order_id"]}
    assert new[0]["seq"] == ended["seq"] + 1
    acknowledged = new[0]
    assert acknowledged["exec_type"] == "new"
    assert (acknowledged["cum_qty"], acknowledged["leaves_qty"]) == (filled, 150 - filled)
    assert acknowledged["avg_price"] == ended["avg_price"]
    assert [report["exec_type"] for report in new[1:-1]] == ["partial_fill"] * (len(new) - 2)
    assert new[-1]["exec_type"] == "fill"
    assert sum(report["last_qty"] for report in new) == 150 - filled
    assert (new[-1]["cum_qty"], new[-1]["leaves_qty"]) == (150, 0)
    fills = [(report["last_qty"], Decimal(report["last_price"])) for report in old + new if report["last_qty"]]
    assert new[-1]["avg_price"] == vwap(fills)
    assert all(report["cum_qty"] + report["leaves_qty"] == 150 for report in new[:-1])
    # The status query and the test-only records say the same.
    assert sim.status(original).json()["status"] == "replaced"
    assert sim.status(replacement).json()["cum_qty"] == 150
    old_view, new_view = record(sim, original), record(sim, replacement)
    assert (old_view["replaced_by"], old_view["orig_client_order_id"]) == (replacement, None)
    assert (new_view["orig_client_order_id"], new_view["replaced_by"]) == (original, None)
    assert old_view["execution"]["status"] == "replaced"
    assert new_view["order"]["quantity"] == 150
    assert replace_counts(old_view) == {**NO_REPLACES, "replace_requests": 1, "replaced": 1}
    assert replace_counts(sim.get("/stats").json()) == {**NO_REPLACES, "replace_requests": 1, "replaced": 1}


def test_a_replaced_stop_limit_is_watched_again_and_works_only_what_is_left(sim: Simulator) -> None:
    price = Decimal(sim.get("/admin/prices/AAPL").json()["price"])
    # A buy stop at the current price triggers as soon as it is acknowledged; the limit is far above.
    stop = {"type": "stop_limit", "stop_price": float(price), "limit_price": float(price * 2), "time_in_force": "gtc"}
    original, before = partly_filled(sim, stop)
    filled = before["execution"]["cum_qty"]
    configure(sim, limit_outcome="fill", max_partial_fills=3)
    replacement = new_id()
    start = next_seq(sim)

    response = replace(sim, original, order(replacement, {**stop, "quantity": 150}))

    assert response.status_code == 201, response.text
    wait_done(sim, [replacement])
    reports = of_order(logged(sim, start), replacement)
    assert reports[0]["exec_type"] == "new"
    assert sum(report["last_qty"] for report in reports) == 150 - filled
    view = record(sim, replacement)
    assert view["trigger_price"] == str(price)
    assert (view["execution"]["status"], view["execution"]["cum_qty"]) == ("filled", 150)


def test_a_replace_before_the_originals_new_gets_new_then_replaced(sim: Simulator) -> None:
    start = next_seq(sim)
    original = resting(sim)
    replacement = new_id()

    response = replace(sim, original, order(replacement, {"quantity": 80, "limit_price": 186.5}))

    assert response.status_code == 201, response.text
    reports = logged(sim, start)
    assert [report["exec_type"] for report in of_order(reports, original)] == ["new", "replaced"]
    acknowledged = of_order(reports, replacement)
    assert [(report["exec_type"], report["cum_qty"], report["leaves_qty"]) for report in acknowledged] == [
        ("new", 0, 80)
    ]
    view = record(sim, replacement)
    assert (view["order"]["limit_price"], view["order"]["time_in_force"]) == (186.5, "day")


def test_a_retried_replace_hears_duplicate_with_the_same_exchange_order_id(sim: Simulator) -> None:
    original, replacement = resting(sim), new_id()
    first = replace(sim, original, order(replacement, {"quantity": 120}))
    start = next_seq(sim)

    again = replace(sim, original, order(replacement, {"quantity": 120}))

    assert first.status_code == 201, first.text
    assert again.status_code == 409
    assert again.json() == {
        "error": "duplicate client order id",
        "client_order_id": replacement,
        "exchange_order_id": first.json()["exchange_order_id"],
    }
    assert logged(sim, start) == []
    # Order entry under the replacement's id hears the same.
    entered = sim.post("/orders", order(replacement))
    assert (entered.status_code, entered.json()) == (409, again.json())


def test_a_replace_whose_answer_is_lost_is_made_and_its_retry_hears_duplicate(sim: Simulator) -> None:
    original, replacement = resting(sim), new_id()
    configure(sim, lost_answer_rate=1.0)

    with pytest.raises(requests.ConnectionError):
        replace(sim, original, order(replacement, {"quantity": 120}))

    again = replace(sim, original, order(replacement, {"quantity": 120}))
    assert again.status_code == 409
    assert again.json()["exchange_order_id"] == record(sim, replacement)["exchange_order_id"]
    assert sim.status(original).json()["status"] == "replaced"
    assert sim.get("/stats").json()["lost_answers"] == 1


def test_a_replace_after_the_fill_is_too_late(sim: Simulator) -> None:
    configure(sim, limit_outcome="fill")
    original = place(sim, quantity=10)
    wait_done(sim, [original])
    start = next_seq(sim)

    response = replace(sim, original, order(new_id(), {"quantity": 20}))

    assert response.status_code == 409
    assert response.json() == {"error": "too late to replace: order is filled", "status": "filled"}
    assert logged(sim, start) == []
    assert replace_counts(record(sim, original)) == {**NO_REPLACES, "replace_requests": 1, "replaces_too_late": 1}


def test_a_replace_of_an_order_never_accepted_is_unknown(sim: Simulator) -> None:
    replacement = new_id()

    response = replace(sim, "cl-never/seen", order(replacement))

    assert response.status_code == 404
    assert response.json() == {"error": "unknown order"}
    assert sim.record(replacement).status_code == 404
    stats = sim.get("/stats").json()
    assert replace_counts(stats) == {**NO_REPLACES, "replace_requests": 1, "replaces_unknown": 1}


def test_a_replace_must_ask_for_more_than_the_original_filled(sim: Simulator) -> None:
    original, before = partly_filled(sim)
    filled = before["execution"]["cum_qty"]
    replacement = new_id()

    response = replace(sim, original, order(replacement, {"quantity": filled, "time_in_force": "gtc"}))

    # Too late, as for a done original: the fills came first (the client asked for a total they passed).
    assert response.status_code == 409
    error = response.json()["error"]
    assert response.json()["status"] == "partially_filled"
    assert error == f"too late to replace: order has filled {filled}, not less than the new quantity {filled}"
    assert sim.status(original).json()["status"] == "partially_filled"
    assert sim.record(replacement).status_code == 404


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"side": "sell"}, "a replace cannot change the instrument, side or type"),
        ({"instrument": "MSFT"}, "a replace cannot change the instrument, side or type"),
        ({"type": "market", "limit_price": None}, "a replace cannot change the instrument, side or type"),
        ({"quantity": 0}, "quantity must be a positive integer, got 0"),
    ],
)
def test_a_replace_that_changes_the_terms_it_must_keep_or_is_invalid_is_refused(
    sim: Simulator, changes: dict[str, Any], problem: str
) -> None:
    original, replacement = resting(sim), new_id()
    start = next_seq(sim)

    response = replace(sim, original, order(replacement, changes))

    assert (response.status_code, response.json()) == (400, {"error": problem})
    assert logged(sim, start) == []
    assert sim.status(original).json()["status"] == "new"
    assert sim.record(replacement).status_code == 404


def test_a_failed_replace_changes_nothing(sim: Simulator) -> None:
    original, replacement = resting(sim), new_id()
    start = next_seq(sim)
    configure(sim, failure_rate=1.0)

    response = replace(sim, original, order(replacement, {"quantity": 120}))

    assert response.status_code == 503
    assert response.json() == {"error": "connection not available"}
    configure(sim, failure_rate=0.0)
    assert logged(sim, start) == []
    view = record(sim, original)
    assert (view["execution"], view["replaced_by"]) == (None, None)
    assert replace_counts(view) == {**NO_REPLACES, "replace_requests": 1, "replace_failures": 1}
    assert sim.record(replacement).status_code == 404
    # The original is as it was: a replace now goes through.
    assert replace(sim, original, order(replacement, {"quantity": 120})).status_code == 201


def test_a_replaced_original_cannot_be_canceled_or_replaced_again(sim: Simulator) -> None:
    original, replacement = resting(sim), new_id()
    assert replace(sim, original, order(replacement, {"quantity": 120})).status_code == 201

    canceled = sim.delete(f"/orders/{original}")
    again = replace(sim, original, order(new_id(), {"quantity": 130}))

    assert canceled.status_code == 409
    assert canceled.json() == {"error": "too late to cancel: order is replaced"}
    assert again.status_code == 409
    assert again.json() == {"error": "too late to replace: order is replaced", "status": "replaced"}
    status = sim.status(original).json()
    assert (status["status"], status["leaves_qty"]) == ("replaced", 0)
    # The replacement is live, and can be canceled like any order.
    assert sim.delete(f"/orders/{replacement}").status_code == 200


def test_replace_asks_for_post(sim: Simulator) -> None:
    original = resting(sim)

    response = sim.get(f"/orders/{original}/replace")

    assert response.status_code == 405
