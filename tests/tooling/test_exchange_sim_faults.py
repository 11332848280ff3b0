"""The simulator's order status query and its fault knobs (lost answers, lost reports, a failing status query).

A real simulator process on loopback, spoken to over HTTP, its feed and our exchange adapter.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests

from chalicelib.adapters.exchange import ExchangeUnavailable, HttpExchange
from chalicelib.domain.model import Order, OrderStatus, OrderTerms, OrderType, Side, VenueOrderState
from tests.tooling.simulator_support import (
    HTTP_TIMEOUT_S,
    TRANSACT_TIME,
    Simulator,
    configure,
    logged,
    market,
    new_id,
    next_seq,
    of_order,
    order,
    place,
    simulator_fixtures,
    wait_done,
)

pytestmark = pytest.mark.integration

STATUS_FIELDS = {
    "client_order_id",
    "exchange_order_id",
    "status",
    "cum_qty",
    "leaves_qty",
    "avg_price",
    "transact_time",
}


shared_sim, sim = simulator_fixtures("exchange-faults")


def answered(sim: Simulator, body: dict[str, Any]) -> int | None:
    """The status of the answer to an order entry, None when the connection closed without one."""
    try:
        return sim.post("/orders", body).status_code
    except requests.ConnectionError:
        return None


def status_of(sim: Simulator, client_order_id: str) -> dict[str, Any]:
    response = sim.status(client_order_id)
    assert response.status_code == 200, response.text
    body = dict(response.json())
    assert set(body) == STATUS_FIELDS
    assert TRANSACT_TIME.match(body["transact_time"]), body
    return body


def as_record_says(sim: Simulator, client_order_id: str) -> dict[str, Any]:
    """The status answer the simulator's full record implies for a done order."""
    record = sim.record(client_order_id).json()
    execution = record["execution"]
    return {
        "client_order_id": client_order_id,
        "exchange_order_id": record["exchange_order_id"],
        "status": execution["status"],
        "cum_qty": execution["cum_qty"],
        "leaves_qty": execution["leaves_qty"],
        "avg_price": None if execution["avg_price"] is None else float(execution["avg_price"]),
    }


def without_time(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "transact_time"}


# --- The order status query ---


def test_a_resting_order_is_new_with_everything_left(sim: Simulator) -> None:
    configure(sim, exec_delay_s=30.0)
    client_order_id = new_id()
    accepted = sim.post("/orders", order(client_order_id)).json()

    body = status_of(sim, client_order_id)

    # Accepted, not acknowledged on the feed yet: the exchange holds it all the same.
    assert without_time(body) == {
        "client_order_id": client_order_id,
        "exchange_order_id": accepted["exchange_order_id"],
        "status": "new",
        "cum_qty": 0,
        "leaves_qty": 10,
        "avg_price": None,
    }


def test_a_done_order_answers_its_final_state(sim: Simulator) -> None:
    filled = place(sim, **market(120))
    configure(sim, reject_rate=1.0)
    rejected = place(sim, **market())
    configure(sim, reject_rate=0.0, cancel_rate=1.0)
    venue_canceled = place(sim, **market(100))
    configure(sim, cancel_rate=0.0, limit_ttl_s=0.0)
    expired = place(sim, limit_price=0.001)
    wait_done(sim, [filled, rejected, venue_canceled, expired])

    bodies = {o: status_of(sim, o) for o in (filled, rejected, venue_canceled, expired)}

    assert [bodies[o]["status"] for o in (filled, rejected, venue_canceled, expired)] == [
        "filled",
        "rejected",
        "canceled",
        "expired",
    ]
    assert (bodies[filled]["cum_qty"], bodies[filled]["leaves_qty"]) == (120, 0)
    assert isinstance(bodies[filled]["avg_price"], float)
    assert 0 < bodies[venue_canceled]["cum_qty"] < 100
    for client_order_id, body in bodies.items():
        assert without_time(body) == as_record_says(sim, client_order_id)
    # transact_time is that of the order's last execution.
    last = of_order(logged(sim, 1), filled)[-1]
    assert bodies[filled]["transact_time"] == last["transact_time"]


def test_a_partly_filled_order_shows_its_fills_so_far(sim: Simulator) -> None:
    # Eight orders of 1..5 fills each, a few tenths of a second apart: some are split, and
    # the polling sees one between its fills.
    configure(sim, exec_delay_s=0.3, max_partial_fills=5)
    orders = [place(sim, **market(100)) for _ in range(8)]
    deadline = time.monotonic() + 30
    partly_filled: list[dict[str, Any]] = []
    while not partly_filled:
        assert time.monotonic() < deadline, "no order seen partly filled"
        bodies = [status_of(sim, client_order_id) for client_order_id in orders]
        partly_filled = [body for body in bodies if body["status"] == "partially_filled"]
    body = partly_filled[0]

    assert 0 < body["cum_qty"] < 100
    assert body["leaves_qty"] == 100 - body["cum_qty"]
    assert body["avg_price"] is not None


def test_a_canceled_order_is_canceled(sim: Simulator) -> None:
    configure(sim, exec_delay_s=30.0)
    client_order_id = place(sim)
    assert sim.delete(f"/orders/{client_order_id}").status_code == 200

    body = status_of(sim, client_order_id)

    assert (body["status"], body["cum_qty"], body["leaves_qty"], body["avg_price"]) == ("canceled", 0, 0, None)


def test_an_order_never_accepted_is_the_unknown_order_verdict(sim: Simulator) -> None:
    never_seen, only_failed = new_id(), new_id()
    configure(sim, failure_rate=1.0)
    assert sim.post("/orders", order(only_failed)).status_code == 503
    configure(sim, failure_rate=0.0)

    responses = [sim.status(client_order_id) for client_order_id in (never_seen, only_failed)]

    assert [response.status_code for response in responses] == [404, 404]
    assert all(response.json() == {"error": "unknown order"} for response in responses)
    # The test-only record of the failed one is still there, apart from the status query.
    assert sim.record(only_failed).json()["failures"] == 1
    stats = sim.get("/stats").json()
    assert (stats["status_requests"], stats["status_unknown"]) == (2, 2)


def test_the_status_path_is_url_decoded_and_only_get_reads_it(sim: Simulator) -> None:
    configure(sim, exec_delay_s=30.0)
    assert sim.post("/orders", order("odd/id with spaces")).status_code == 201

    response = sim.get("/orders/odd%2Fid%20with%20spaces")
    refused = requests.post(f"{sim.url}/admin/orders/{new_id()}", timeout=HTTP_TIMEOUT_S)

    assert response.status_code == 200
    assert response.json()["client_order_id"] == "odd/id with spaces"
    assert refused.status_code == 405
    assert "GET" in refused.json()["error"]


def test_the_status_query_takes_the_latency(sim: Simulator) -> None:
    client_order_id = place(sim)
    configure(sim, latency_s=0.3)

    started = time.monotonic()
    response = sim.status(client_order_id)

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


# --- The status failure knob ---


def test_status_failure_rate_one_makes_the_query_unavailable_and_nothing_else(sim: Simulator) -> None:
    configure(sim, exec_delay_s=30.0)
    client_order_id = place(sim)
    configure(sim, status_failure_rate=1.0)

    failed = [sim.status(target) for target in (client_order_id, new_id())]

    assert [response.status_code for response in failed] == [503, 503]
    assert all(response.json() == {"error": "order status not available"} for response in failed)
    # Order entry, cancels and the test-only record go on as before.
    assert sim.post("/orders", order(new_id())).status_code == 201
    assert sim.delete(f"/orders/{client_order_id}").status_code == 200
    record = sim.record(client_order_id).json()
    assert (record["status_requests"], record["status_failures"]) == (1, 1)
    stats = sim.get("/stats").json()
    assert (stats["status_requests"], stats["status_failures"], stats["status_unknown"]) == (2, 2, 0)
    configure(sim, status_failure_rate=0.0)
    assert status_of(sim, client_order_id)["status"] == "canceled"


def test_a_status_failure_rate_between_fails_some_queries(sim: Simulator) -> None:
    client_order_id = place(sim)
    configure(sim, status_failure_rate=0.5)

    codes = [sim.status(client_order_id).status_code for _ in range(40)]

    assert set(codes) == {200, 503}
    assert sim.get("/stats").json()["status_failures"] == codes.count(503)


# --- Lost answers ---


def test_a_lost_answer_leaves_the_order_accepted_and_worked(sim: Simulator) -> None:
    configure(sim, lost_answer_rate=1.0)
    start = next_seq(sim)
    client_order_id = new_id()

    with pytest.raises(requests.ConnectionError):
        sim.post("/orders", order(client_order_id, market(40)))

    # Only acceptances lose their answer under this knob: a retry hears it is a duplicate.
    again = sim.post("/orders", order(client_order_id, market(40)))
    assert again.status_code == 409
    wait_done(sim, [client_order_id])
    record = sim.record(client_order_id).json()
    assert (record["accepted"], record["duplicates_rejected"], record["lost_answers"]) == (1, 1, 1)
    own = of_order(logged(sim, start), client_order_id)
    assert [report["exec_type"] for report in own][-1] == "fill"
    assert [report["exec_id"] for report in own] == record["execution"]["exec_ids"]
    assert again.json()["exchange_order_id"] == record["exchange_order_id"]
    assert status_of(sim, client_order_id)["status"] == "filled"
    stats = sim.get("/stats").json()
    assert (stats["accepted"], stats["lost_answers"]) == (1, 1)


def test_a_lost_answer_rate_between_loses_some_acceptances(sim: Simulator) -> None:
    configure(sim, lost_answer_rate=0.5)
    ids = [new_id() for _ in range(30)]

    codes = [answered(sim, order(client_order_id)) for client_order_id in ids]

    assert set(codes) == {201, None}
    lost = [client_order_id for client_order_id, code in zip(ids, codes, strict=True) if code is None]
    assert all(sim.record(client_order_id).json()["accepted"] == 1 for client_order_id in lost)
    assert sim.get("/stats").json()["lost_answers"] == len(lost)


def test_an_order_chosen_to_lose_answers_loses_every_one_but_cancels_and_status_answer(sim: Simulator) -> None:
    configure(sim, lost_answer_order_rate=1.0, exec_delay_s=30.0)
    client_order_id = new_id()

    first = answered(sim, order(client_order_id))
    duplicate = answered(sim, order(client_order_id))
    configure(sim, failure_rate=1.0)
    failed = answered(sim, order(client_order_id))
    configure(sim, failure_rate=0.0)
    # A malformed order is refused before anything is decided about its id: that answer comes.
    invalid = answered(sim, order(client_order_id, {"quantity": 0}))

    assert (first, duplicate, failed, invalid) == (None, None, None, 400)
    record = sim.record(client_order_id).json()
    assert (record["accepted"], record["duplicates_rejected"], record["failures"]) == (1, 1, 1)
    assert record["lost_answers"] == 3
    assert status_of(sim, client_order_id)["status"] == "new"
    assert sim.delete(f"/orders/{client_order_id}").status_code == 200
    assert sim.get("/stats").json()["lost_answers"] == 3


def test_a_lost_answer_order_rate_between_picks_orders_and_keeps_to_them(sim: Simulator) -> None:
    configure(sim, lost_answer_order_rate=0.5)
    ids = [new_id() for _ in range(30)]

    first = {client_order_id: answered(sim, order(client_order_id)) for client_order_id in ids}
    second = {client_order_id: answered(sim, order(client_order_id)) for client_order_id in ids}

    assert set(first.values()) == {201, None}
    # The same orders lose their answer again; the others hear they are duplicates.
    assert {o for o, code in second.items() if code is None} == {o for o, code in first.items() if code is None}
    assert {code for code in second.values() if code is not None} == {409}
    assert all(sim.record(client_order_id).json()["accepted"] == 1 for client_order_id in ids)


# --- Lost reports ---


def test_feed_loss_rate_one_sends_nothing_but_the_status_shows_every_execution(sim: Simulator) -> None:
    configure(sim, feed_loss_rate=1.0)
    start = next_seq(sim)
    client_order_id = place(sim, **market(80))

    wait_done(sim, [client_order_id])

    assert logged(sim, start) == []
    assert next_seq(sim) == start
    record = sim.record(client_order_id).json()
    assert record["execution"]["exec_ids"] == []
    assert len(record["lost_exec_ids"]) >= 2  # new and at least one fill
    assert record["lost_reports"] == len(record["lost_exec_ids"])
    body = status_of(sim, client_order_id)
    assert (body["status"], body["cum_qty"], body["leaves_qty"]) == ("filled", 80, 0)
    assert body["avg_price"] == float(record["execution"]["avg_price"])
    assert sim.get("/stats").json()["lost_reports"] == len(record["lost_exec_ids"])


def test_a_feed_loss_rate_between_leaves_no_seq_gap_and_the_status_counts_the_lost(sim: Simulator) -> None:
    configure(sim, feed_loss_rate=0.4, max_partial_fills=4)
    start = next_seq(sim)
    quantities = {place(sim, **market(quantity)): quantity for quantity in range(50, 66)}

    wait_done(sim, quantities)

    log = logged(sim, start)
    assert [report["seq"] for report in log] == list(range(start, start + len(log)))
    lost_total = 0
    for client_order_id, quantity in quantities.items():
        record = sim.record(client_order_id).json()
        carried = [report["exec_id"] for report in of_order(log, client_order_id)]
        assert carried == record["execution"]["exec_ids"]
        assert not set(carried) & set(record["lost_exec_ids"])
        lost_total += len(record["lost_exec_ids"])
        body = status_of(sim, client_order_id)
        assert (body["status"], body["cum_qty"]) == ("filled", quantity)
        assert without_time(body) == as_record_says(sim, client_order_id)
    # Sixteen orders of 2..5 reports each, 40% lost: some are, some are not.
    assert 0 < lost_total < len(log) + lost_total
    assert sim.get("/stats").json()["lost_reports"] == lost_total


# --- The status query through our exchange adapter ---


def test_the_adapter_reads_the_exchanges_state(sim: Simulator) -> None:
    exchange = HttpExchange(sim.url, timeout_s=HTTP_TIMEOUT_S)
    configure(sim, feed_loss_rate=1.0)
    filled = place(sim, **market(30))
    wait_done(sim, [filled])
    configure(sim, feed_loss_rate=0.0, exec_delay_s=30.0)
    resting = place(sim)
    odd = new_id() + "/with spaces?&%"
    assert sim.post("/orders", order(odd)).status_code == 201
    record = sim.record(filled).json()

    assert exchange.status(filled) == VenueOrderState(
        exchange_order_id=record["exchange_order_id"],
        status=OrderStatus.FILLED,
        cum_qty=30,
        leaves_qty=0,
        avg_price=Decimal(record["execution"]["avg_price"]),
    )
    placed = exchange.status(resting)
    assert placed is not None
    assert (placed.status, placed.cum_qty, placed.leaves_qty, placed.avg_price) == (OrderStatus.PLACED, 0, 10, None)
    assert exchange.status(new_id()) is None
    # The id travels as one path segment, whatever it holds.
    odd_state = exchange.status(odd)
    assert odd_state is not None
    assert odd_state.status is OrderStatus.PLACED


def test_the_adapter_raises_unavailable_when_the_status_query_fails(sim: Simulator) -> None:
    exchange = HttpExchange(sim.url, timeout_s=HTTP_TIMEOUT_S)
    client_order_id = place(sim)
    configure(sim, status_failure_rate=1.0)

    with pytest.raises(ExchangeUnavailable, match="order status not available"):
        exchange.status(client_order_id)
    # Not even an order never seen is a verdict while the query fails.
    with pytest.raises(ExchangeUnavailable):
        exchange.status(new_id())


def test_the_adapter_raises_unavailable_on_a_slow_status_query(sim: Simulator) -> None:
    client_order_id = place(sim)
    configure(sim, latency_s=1.0)

    with pytest.raises(ExchangeUnavailable, match="unreachable"):
        HttpExchange(sim.url, timeout_s=0.2).status(client_order_id)


def our_order(quantity: int) -> Order:
    return Order.create("acct-1", OrderTerms(OrderType.MARKET, Side.BUY, "AAPL", quantity, None), datetime.now(UTC))


def test_through_the_adapter_a_lost_answer_is_unavailable_and_the_status_tells_the_truth(sim: Simulator) -> None:
    exchange = HttpExchange(sim.url, timeout_s=HTTP_TIMEOUT_S)
    once, always = our_order(20), our_order(30)
    configure(sim, lost_answer_rate=1.0)

    with pytest.raises(ExchangeUnavailable, match="unreachable"):
        exchange.place(once)
    configure(sim, lost_answer_rate=0.0, lost_answer_order_rate=1.0)
    for _ in range(3):
        with pytest.raises(ExchangeUnavailable, match="unreachable"):
            exchange.place(always)
    configure(sim, lost_answer_order_rate=0.0)
    retried = exchange.place(once)
    wait_done(sim, [once.id, always.id])

    # The first lost answer: the retry hears the exchange had it all along.
    assert retried.duplicate
    assert retried.exchange_order_id == sim.record(once.id).json()["exchange_order_id"]
    # Every answer lost: only the status query says the exchange holds the order.
    states = {order.id: exchange.status(order.id) for order in (once, always)}
    assert {order_id: state.status if state else None for order_id, state in states.items()} == {
        once.id: OrderStatus.FILLED,
        always.id: OrderStatus.FILLED,
    }
    assert (sim.record(always.id).json()["accepted"], sim.record(always.id).json()["lost_answers"]) == (1, 3)
