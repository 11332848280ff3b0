"""The exchange simulator's execution feed over a real WebSocket, checked against the simulator's own record."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from chalicelib.adapters.exchange import CancelOutcome, ExchangeUnavailable, HttpExchange
from devstack.processes import LOOPBACK, free_port
from tests.tooling.simulator_support import (
    HTTP_TIMEOUT_S,
    Simulator,
    all_terminal,
    check_reports_of_one_order,
    configure,
    feed,
    fold,
    logged,
    market,
    new_id,
    next_seq,
    nothing_more,
    of_order,
    order,
    place,
    receive,
    receive_until,
    simulator_fixtures,
    wait_done,
)

pytestmark = pytest.mark.integration


shared_sim, sim = simulator_fixtures("exchange-feed")


# --- Reports of one order ---


def test_market_orders_get_new_then_partial_fills_then_a_fill(sim: Simulator) -> None:
    start = next_seq(sim)
    with feed(sim, start) as connection:
        quantities = {place(sim, **market(quantity)): quantity for quantity in (100, 37, 250, 9, 1000, 64, 3, 120)}
        reports = receive_until(connection, all_terminal(quantities))

    assert [report["seq"] for report in reports] == list(range(start, start + len(reports)))
    fill_counts = []
    for client_order_id, quantity in quantities.items():
        own = of_order(reports, client_order_id)
        check_reports_of_one_order(own, quantity)
        assert own[-1]["exec_type"] == "fill"
        assert sum(report["last_qty"] for report in own) == quantity
        fill_counts.append(len(own) - 1)
    assert all(1 <= count <= 3 for count in fill_counts), fill_counts
    # Eight orders each split at random into 1..3 fills: some must be split.
    assert max(fill_counts) > 1


def test_limit_orders_never_fill_beyond_their_limit(sim: Simulator) -> None:
    # What the market pays for the instrument, so that some limits are right at it.
    probe = place(sim, **market(10, instrument="MSFT"))
    reference = Decimal(wait_done(sim, [probe])[probe]["avg_price"])
    limits: dict[str, tuple[str, Decimal]] = {}
    for side, far in (("buy", Decimal("0.9")), ("sell", Decimal("1.1"))):
        for factor in (Decimal(1), Decimal(1), Decimal(1), Decimal(1), Decimal(1), far, far, far):
            limit = (reference * factor).quantize(Decimal("0.01"))
            changes = {"instrument": "MSFT", "side": side, "quantity": 50, "limit_price": float(limit)}
            limits[place(sim, **changes)] = (side, limit)

    wait_done(sim, limits)

    reports = logged(sim, 1)
    fills = {"buy": 0, "sell": 0}
    for client_order_id, (side, limit) in limits.items():
        own = of_order(reports, client_order_id)
        check_reports_of_one_order(own, 50)
        for report in own:
            if report["last_price"] is None:
                continue
            fills[side] += 1
            price = Decimal(report["last_price"])
            assert price <= limit if side == "buy" else price >= limit, (side, limit, report)
    # Two thirds of limit orders fill at least partly; with eight a side, some do.
    assert fills["buy"] > 0
    assert fills["sell"] > 0


def test_reject_rate_one_gives_a_lone_rejected(sim: Simulator) -> None:
    configure(sim, reject_rate=1.0)
    start = next_seq(sim)
    orders = [place(sim, **market()), place(sim)]

    records = wait_done(sim, orders)
    # Time for any wrong report after `rejected` to show up: several execution delays.
    time.sleep(0.5)

    reports = logged(sim, start)
    for client_order_id in orders:
        own = of_order(reports, client_order_id)
        assert [report["exec_type"] for report in own] == ["rejected"]
        assert (own[0]["cum_qty"], own[0]["leaves_qty"], own[0]["avg_price"]) == (0, 0, None)
        check_reports_of_one_order(own, 10)
        assert records[client_order_id] == {
            "status": "rejected",
            "cum_qty": 0,
            "leaves_qty": 0,
            "avg_price": None,
            "exec_ids": [own[0]["exec_id"]],
            "done": True,
        }


def test_a_venue_cancel_comes_after_partial_fills(sim: Simulator) -> None:
    configure(sim, cancel_rate=1.0)
    orders = [place(sim, **market(100)), place(sim, quantity=100), place(sim, **market(1))]

    wait_done(sim, orders)

    reports = logged(sim, 1)
    big_market, big_limit, single = (of_order(reports, client_order_id) for client_order_id in orders)
    for own in (big_market, big_limit):
        check_reports_of_one_order(own, 100)
        assert [report["exec_type"] for report in own][-1] == "canceled"
        assert 0 < own[-1]["cum_qty"] < 100
    # One share cannot be filled partly: it is canceled without fills.
    assert [report["exec_type"] for report in single] == ["new", "canceled"]


def test_a_limit_order_that_does_not_fill_completely_expires(sim: Simulator) -> None:
    orders = {place(sim, quantity=20, limit_price=100.0): 20 for _ in range(9)}

    records = wait_done(sim, orders)

    reports = logged(sim, 1)
    statuses = set()
    for client_order_id, quantity in orders.items():
        own = of_order(reports, client_order_id)
        check_reports_of_one_order(own, quantity)
        statuses.add(records[client_order_id]["status"])
        if own[-1]["exec_type"] == "expired":
            assert own[-1]["cum_qty"] < quantity
    # Rest, fill partly or fill completely, a third each: nine orders show more than one.
    assert len(statuses) > 1
    assert statuses <= {"filled", "expired"}


# --- Cancels on request ---


def cancel(sim: Simulator, client_order_id: str) -> int:
    return sim.delete(f"/orders/{client_order_id}").status_code


def test_a_cancel_ends_a_live_order_and_none_of_its_fills_follow(sim: Simulator) -> None:
    # Several fills each, far enough apart that the cancel comes between `new` and the first.
    configure(sim, exec_delay_s=0.4, max_partial_fills=5)
    start = next_seq(sim)
    with feed(sim, start) as connection:
        client_order_id = place(sim, **market(100))
        (new,) = receive(connection, 1)
        assert new["exec_type"] == "new"

        assert cancel(sim, client_order_id) == 200
        (canceled,) = receive(connection, 1)
        # Longer than every step of the order would have taken: 5 fills at up to 0.6s.
        assert nothing_more(connection, quiet_s=3.5)

    assert canceled["seq"] == new["seq"] + 1
    assert (canceled["exec_type"], canceled["client_order_id"]) == ("canceled", client_order_id)
    assert (canceled["cum_qty"], canceled["leaves_qty"], canceled["avg_price"]) == (0, 0, None)
    own = of_order(logged(sim, start), client_order_id)
    assert own == [new, canceled]
    check_reports_of_one_order(own, 100)
    assert wait_done(sim, [client_order_id])[client_order_id] == {
        "status": "canceled",
        "cum_qty": 0,
        "leaves_qty": 0,
        "avg_price": None,
        "exec_ids": [new["exec_id"], canceled["exec_id"]],
        "done": True,
    }


def test_a_cancel_before_the_acknowledgement_still_gives_new_first(sim: Simulator) -> None:
    configure(sim, exec_delay_s=30.0)
    start = next_seq(sim)
    client_order_id = place(sim)

    assert cancel(sim, client_order_id) == 200

    own = of_order(logged(sim, start), client_order_id)
    assert [report["exec_type"] for report in own] == ["new", "canceled"]
    assert own[1]["seq"] == own[0]["seq"] + 1
    check_reports_of_one_order(own, 10)


def test_a_canceled_report_carries_the_fills_so_far(sim: Simulator) -> None:
    # Cancels at staggered moments, so that some land after partial fills and some too late.
    configure(sim, exec_delay_s=0.05, max_partial_fills=6)
    start = next_seq(sim)
    quantities = {place(sim, **market(100 + index)): 100 + index for index in range(16)}
    statuses = {}
    for client_order_id in quantities:
        time.sleep(0.03)
        statuses[client_order_id] = cancel(sim, client_order_id)

    records = wait_done(sim, quantities)
    # Time for any report after a terminal one to show up: several execution delays.
    time.sleep(0.5)

    reports = logged(sim, start)
    assert set(statuses.values()) <= {200, 409}
    partly_filled = 0
    for client_order_id, quantity in quantities.items():
        own = of_order(reports, client_order_id)
        check_reports_of_one_order(own, quantity)
        assert own[-1]["exec_type"] == ("canceled" if statuses[client_order_id] == 200 else "fill")
        if own[-1]["exec_type"] == "canceled" and own[-1]["cum_qty"] > 0:
            partly_filled += 1
    assert fold(reports) == records
    # Sixteen orders of up to six fills each, canceled 30ms apart while fills come every ~50ms.
    assert partly_filled > 0, statuses


def test_a_cancel_after_the_fill_is_too_late_and_emits_nothing(sim: Simulator) -> None:
    client_order_id = place(sim, **market())
    wait_done(sim, [client_order_id])
    last_seq = next_seq(sim) - 1

    response = sim.delete(f"/orders/{client_order_id}")

    assert response.status_code == 409
    assert response.json() == {"error": "too late to cancel: order is filled"}
    assert next_seq(sim) - 1 == last_seq


@pytest.mark.parametrize(
    ("knobs", "changes", "status"),
    [
        ({"reject_rate": 1.0}, market(), "rejected"),
        # A buy limit under a cent can never fill: it rests until its TTL.
        ({"limit_ttl_s": 0.0}, {"limit_price": 0.001}, "expired"),
        ({"cancel_rate": 1.0}, market(), "canceled"),
    ],
    ids=["rejected", "expired", "venue-canceled"],
)
def test_a_cancel_of_an_order_the_venue_ended_is_too_late(
    sim: Simulator, knobs: dict[str, float], changes: dict[str, Any], status: str
) -> None:
    configure(sim, **knobs)
    client_order_id = place(sim, **changes)
    assert wait_done(sim, [client_order_id])[client_order_id]["status"] == status

    response = sim.delete(f"/orders/{client_order_id}")

    assert response.status_code == 409
    assert response.json() == {"error": f"too late to cancel: order is {status}"}


def test_a_second_cancel_gives_no_second_canceled_report(sim: Simulator) -> None:
    configure(sim, exec_delay_s=30.0)
    start = next_seq(sim)
    client_order_id = place(sim)

    statuses = [cancel(sim, client_order_id) for _ in range(3)]

    assert statuses == [200, 409, 409]
    exec_types = [report["exec_type"] for report in of_order(logged(sim, start), client_order_id)]
    assert exec_types.count("canceled") == 1


def test_the_canceled_report_goes_through_the_misbehaviour_knobs(sim: Simulator) -> None:
    configure(sim, exec_delay_s=30.0, feed_duplicate_rate=1.0)
    start = next_seq(sim)
    with feed(sim, start) as connection:
        client_order_id = place(sim)
        assert cancel(sim, client_order_id) == 200
        live = receive(connection, 4)
        assert nothing_more(connection)

    assert [report["exec_type"] for report in live] == ["new", "new", "canceled", "canceled"]
    assert live[2] == live[3]
    assert {report["client_order_id"] for report in live} == {client_order_id}


# --- Cancels through our exchange adapter ---


def test_the_adapter_gets_each_outcome_from_the_simulator(sim: Simulator) -> None:
    exchange = HttpExchange(sim.url, timeout_s=HTTP_TIMEOUT_S)
    filled = place(sim, **market())
    wait_done(sim, [filled])
    configure(sim, exec_delay_s=30.0)
    live = place(sim)
    odd = new_id() + "/with spaces?&%"
    assert sim.post("/orders", order(odd)).status_code == 201

    assert exchange.cancel(live) is CancelOutcome.CANCEL_ACCEPTED
    assert exchange.cancel(live) is CancelOutcome.TOO_LATE
    assert exchange.cancel(filled) is CancelOutcome.TOO_LATE
    assert exchange.cancel(new_id()) is CancelOutcome.UNKNOWN_ORDER
    # The id travels as one path segment, whatever it holds.
    assert exchange.cancel(odd) is CancelOutcome.CANCEL_ACCEPTED
    assert sim.get("/stats").json()["canceled_by_request"] == 2


def test_the_adapter_raises_unavailable_for_a_failed_cancel(sim: Simulator) -> None:
    exchange = HttpExchange(sim.url, timeout_s=HTTP_TIMEOUT_S)
    configure(sim, exec_delay_s=30.0)
    client_order_id = place(sim)
    configure(sim, failure_rate=1.0)

    with pytest.raises(ExchangeUnavailable, match="connection not available"):
        exchange.cancel(client_order_id)

    # Nothing changed at the exchange, so the retry decides.
    configure(sim, failure_rate=0.0)
    assert exchange.cancel(client_order_id) is CancelOutcome.CANCEL_ACCEPTED


def test_the_adapter_raises_unavailable_on_a_timeout_and_the_retry_sees_the_outcome(sim: Simulator) -> None:
    exchange = HttpExchange(sim.url, timeout_s=0.2)
    configure(sim, exec_delay_s=30.0)
    client_order_id = place(sim)
    configure(sim, latency_s=1.0)

    with pytest.raises(ExchangeUnavailable, match="unreachable"):
        exchange.cancel(client_order_id)

    # The exchange went on with the cancel after we stopped waiting: a retry finds it done,
    # and the feed tells which way (here, canceled).
    configure(sim, latency_s=0.0)
    record = wait_done(sim, [client_order_id])[client_order_id]
    assert record["status"] == "canceled"
    assert exchange.cancel(client_order_id) is CancelOutcome.TOO_LATE


def test_the_adapter_raises_unavailable_when_nothing_listens() -> None:
    exchange = HttpExchange(f"http://{LOOPBACK}:{free_port()}", timeout_s=HTTP_TIMEOUT_S)

    with pytest.raises(ExchangeUnavailable, match="unreachable"):
        exchange.cancel(new_id())


# --- The feed: replay, resume, several clients, misbehaviour knobs ---


def test_replay_is_the_log_in_order_and_a_reconnect_misses_and_repeats_nothing(sim: Simulator) -> None:
    start = next_seq(sim)
    orders = [place(sim, **market(quantity)) for quantity in (100, 200, 300, 400, 500)]
    with feed(sim, start) as connection:
        first = receive(connection, 3)
    resume_from = first[-1]["seq"] + 1
    with feed(sim, resume_from) as connection:
        rest = receive_until(connection, all_terminal(orders))

    received = first + rest
    seqs = [report["seq"] for report in received]
    assert seqs == list(range(start, start + len(received)))
    assert rest[0]["seq"] == resume_from
    log = logged(sim, start)
    assert received == log[: len(received)]

    wait_done(sim, orders)
    log = logged(sim, start)
    with feed(sim, start) as connection:
        replayed = receive(connection, len(log))
        assert nothing_more(connection)
    assert replayed == log
    with feed(sim, start + 2) as connection:
        assert receive(connection, len(log) - 2) == log[2:]


def test_the_default_from_seq_is_one(sim: Simulator) -> None:
    wait_done(sim, [place(sim, **market())])
    log = logged(sim, 1)

    with feed(sim) as connection:
        replayed = receive(connection, len(log))

    assert replayed == log
    assert replayed[0]["seq"] == 1


def test_a_from_seq_ahead_of_the_log_waits_for_that_report(sim: Simulator) -> None:
    start = next_seq(sim)
    with feed(sim, start + 1) as connection:
        client_order_id = place(sim, **market())
        reports = receive_until(connection, all_terminal([client_order_id]))

    assert reports[0]["seq"] == start + 1
    assert [report["seq"] for report in reports] == list(range(start + 1, start + 1 + len(reports)))


def test_two_clients_both_get_everything(sim: Simulator) -> None:
    start = next_seq(sim)
    with feed(sim, start) as one, feed(sim, start) as other:
        orders = [place(sim, **market(quantity)) for quantity in (10, 20, 30, 40)]
        wait_done(sim, orders)
        log = logged(sim, start)
        from_one = receive(one, len(log))
        from_other = receive(other, len(log))

    assert from_one == log
    assert from_other == log


def test_duplicate_rate_one_sends_every_live_report_twice_but_replays_once(sim: Simulator) -> None:
    configure(sim, feed_duplicate_rate=1.0)
    start = next_seq(sim)
    with feed(sim, start) as connection:
        orders = [place(sim, **market(quantity)) for quantity in (100, 50)]
        wait_done(sim, orders)
        log = logged(sim, start)
        live = receive(connection, 2 * len(log))

    assert live == [report for report in log for _ in range(2)]
    with feed(sim, start) as connection:
        replayed = receive(connection, len(log))
        assert nothing_more(connection)
    assert replayed == log


def test_reorder_rate_swaps_live_neighbours_but_replay_is_in_order(sim: Simulator) -> None:
    configure(sim, feed_reorder_rate=1.0)
    start = next_seq(sim)
    with feed(sim, start) as connection:
        orders = [place(sim, **market(quantity)) for quantity in (100, 200, 300)]
        wait_done(sim, orders)
        log = logged(sim, start)
        # A report held back with no next one to swap with still comes, a little later.
        live = receive(connection, len(log))

    seqs = [report["seq"] for report in live]
    assert seqs != sorted(seqs)
    assert sorted(seqs) == [report["seq"] for report in log]
    assert sorted(live, key=lambda report: report["seq"]) == log
    with feed(sim, start) as connection:
        assert receive(connection, len(log)) == log


@pytest.mark.parametrize(
    "misbehaviour", [{}, {"feed_duplicate_rate": 0.5, "feed_reorder_rate": 0.5}], ids=["clean", "dup-reorder"]
)
def test_the_execution_record_is_what_folding_the_feed_gives(sim: Simulator, misbehaviour: dict[str, float]) -> None:
    configure(sim, reject_rate=0.2, cancel_rate=0.2, max_partial_fills=4, **misbehaviour)
    start = next_seq(sim)
    with feed(sim, start) as connection:
        quantities = {}
        for side in ("buy", "sell"):
            for quantity in (1, 7, 100, 333):
                quantities[place(sim, **market(quantity, side))] = quantity
                quantities[place(sim, side=side, quantity=quantity, limit_price=187.25)] = quantity
        records = wait_done(sim, quantities)
        log = logged(sim, start)
        live = receive_until(connection, lambda reports: {r["seq"] for r in reports} >= {r["seq"] for r in log})

    folded = fold(live)
    assert folded == records
    assert fold(log) == records
    for client_order_id, quantity in quantities.items():
        check_reports_of_one_order(of_order(log, client_order_id), quantity)


def test_a_stalled_client_holds_up_neither_the_engine_nor_other_clients(sim: Simulator) -> None:
    for _ in range(50):
        place(sim, **market())
    start = next_seq(sim)
    with stalled_client(sim), feed(sim, start) as connection:
        orders = [place(sim, **market(quantity)) for quantity in range(100, 160)]
        wait_done(sim, orders)
        log = logged(sim, start)
        assert receive(connection, len(log)) == log


@contextmanager
def stalled_client(sim: Simulator) -> Iterator[socket.socket]:
    """A feed client that completes the handshake, asks for everything and then never reads."""
    raw = socket.socket()
    # A tiny receive window, so that what the simulator sends piles up on its side.
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(HTTP_TIMEOUT_S)
    try:
        raw.connect((LOOPBACK, sim.feed_port))
        raw.sendall(
            b"GET /feed?from_seq=1 HTTP/1.1\r\n"
            + f"Host: {LOOPBACK}:{sim.feed_port}\r\n".encode()
            + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = raw.recv(1)
            assert chunk, "the feed closed during the handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101")
        yield raw
    finally:
        raw.close()


# --- Handshake, HTTP log view, reset ---


@pytest.mark.parametrize(
    "query",
    ["from_seq=0", "from_seq=-1", "from_seq=abc", "from_seq=", "from_seq=1.5", "from_seq=1&from_seq=2", "from=3"],
)
def test_a_bad_from_seq_is_refused_at_the_handshake_and_over_http(sim: Simulator, query: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{sim.feed_url}?{query}", open_timeout=HTTP_TIMEOUT_S)

    assert refused.value.response.status_code == 400
    assert b"from" in refused.value.response.body
    response = sim.get(f"/executions?{query}")
    assert response.status_code == 400
    assert "from" in response.json()["error"]


def test_another_path_than_the_feed_is_a_404_at_the_handshake(sim: Simulator) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://{LOOPBACK}:{sim.feed_port}/elsewhere", open_timeout=HTTP_TIMEOUT_S)

    assert refused.value.response.status_code == 404


def test_executions_lists_the_log_from_a_seq(sim: Simulator) -> None:
    start = next_seq(sim)
    client_order_id = place(sim, **market())
    wait_done(sim, [client_order_id])

    body = sim.get(f"/executions?from_seq={start}").json()

    assert body["from_seq"] == start
    assert [report["seq"] for report in body["reports"]] == list(range(start, body["last_seq"] + 1))
    assert body["last_seq"] == sim.get("/stats").json()["feed_seq"]
    assert sim.get(f"/executions?from_seq={body['last_seq'] + 1}").json()["reports"] == []


def test_reset_drops_pending_work_and_never_restarts_seq(sim: Simulator) -> None:
    wait_done(sim, [place(sim, **market())])
    seq_before = sim.get("/stats").json()["feed_seq"]
    configure(sim, exec_delay_s=0.5)
    forgotten = place(sim, **market())

    assert sim.post("/admin/reset").status_code == 200
    configure(sim, exec_delay_s=0.02)
    kept = place(sim, **market())
    wait_done(sim, [kept])
    # Longer than every step of the forgotten order would have taken (new at up to 0.75s).
    time.sleep(3.0)

    assert sim.record(forgotten).status_code == 404
    reports = logged(sim, seq_before + 1)
    assert {report["client_order_id"] for report in reports} == {kept}
    assert reports[0]["seq"] == seq_before + 1
    assert sim.get("/stats").json()["feed_seq"] == reports[-1]["seq"]
