"""The exchange simulator's execution feed over a real WebSocket, checked against the simulator's own record."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from chalicelib.adapters.exchange import CancelOutcome, ExchangeUnavailable, HttpExchange
from devstack.processes import LOOPBACK, free_port
from tests.integration.test_exchange_sim import (
    CALM,
    HTTP_TIMEOUT_S,
    Simulator,
    new_id,
    order,
    running_simulator,
)

pytestmark = pytest.mark.integration

# Short delays and TTL so that every order is done within a second or two.
FAST_CONFIG: dict[str, float | int] = {
    "failure_rate": 0.0,
    "latency_s": 0.0,
    "exec_delay_s": 0.02,
    "max_partial_fills": 3,
    "limit_ttl_s": 0.3,
    "reject_rate": 0.0,
    "cancel_rate": 0.0,
    "feed_duplicate_rate": 0.0,
    "feed_reorder_rate": 0.0,
}
FAST = {
    **CALM,
    "EXCHANGE_EXEC_DELAY_S": "0.02",
    "EXCHANGE_LIMIT_TTL_S": "0.3",
    "EXCHANGE_REJECT_RATE": "0",
    "EXCHANGE_CANCEL_RATE": "0",
}
# Deadlines only stop a broken run from hanging; nothing asserts how fast anything is.
DEADLINE_S = 30.0
TERMINAL = {"fill", "canceled", "expired", "rejected"}
STATUS = {
    "new": "new",
    "partial_fill": "partially_filled",
    "fill": "filled",
    "canceled": "canceled",
    "rejected": "rejected",
    "expired": "expired",
}
TRANSACT_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PRICE = re.compile(r"^\d+\.\d\d$")
AVG_PRICE = re.compile(r"^\d+\.\d{4}$")
REPORT_FIELDS = {
    "seq",
    "exec_id",
    "client_order_id",
    "exchange_order_id",
    "exec_type",
    "last_qty",
    "last_price",
    "cum_qty",
    "leaves_qty",
    "avg_price",
    "transact_time",
}


@pytest.fixture(scope="module")
def shared_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with running_simulator(tmp_path_factory.mktemp("exchange-feed"), FAST) as sim:
        yield sim


@pytest.fixture
def sim(shared_sim: Simulator) -> Simulator:
    """The shared simulator with fast, well-behaved knobs and no orders, whatever the previous test did."""
    assert shared_sim.post("/admin/config", FAST_CONFIG).status_code == 200
    assert shared_sim.post("/admin/reset").status_code == 200
    return shared_sim


# --- Helpers ---


def configure(sim: Simulator, **knobs: float) -> None:
    response = sim.post("/admin/config", knobs)
    assert response.status_code == 200, response.text


def next_seq(sim: Simulator) -> int:
    """The seq the next report will get: connecting from here sees only what happens from now on."""
    return int(sim.get("/stats").json()["feed_seq"]) + 1


def place(sim: Simulator, **changes: Any) -> str:
    client_order_id = new_id()
    response = sim.post("/orders", order(client_order_id, changes))
    assert response.status_code == 201, response.text
    return client_order_id


def market(quantity: int = 100, side: str = "buy", instrument: str = "AAPL") -> dict[str, Any]:
    return {"type": "market", "limit_price": None, "quantity": quantity, "side": side, "instrument": instrument}


@contextmanager
def feed(sim: Simulator, from_seq: int | None = None) -> Iterator[ClientConnection]:
    url = sim.feed_url if from_seq is None else f"{sim.feed_url}?from_seq={from_seq}"
    with connect(url, open_timeout=HTTP_TIMEOUT_S, close_timeout=HTTP_TIMEOUT_S) as connection:
        yield connection


def receive(connection: ClientConnection, count: int) -> list[dict[str, Any]]:
    return receive_until(connection, lambda reports: len(reports) >= count)


def receive_until(connection: ClientConnection, enough: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + DEADLINE_S
    while not enough(reports):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"the feed stopped short after {len(reports)} reports: {reports}")
        try:
            reports.append(json.loads(connection.recv(timeout=remaining)))
        except TimeoutError:
            continue
    return reports


def all_terminal(client_order_ids: Iterable[str]) -> Callable[[list[dict[str, Any]]], bool]:
    wanted = set(client_order_ids)

    def enough(reports: list[dict[str, Any]]) -> bool:
        return wanted <= {report["client_order_id"] for report in reports if report["exec_type"] in TERMINAL}

    return enough


def nothing_more(connection: ClientConnection, quiet_s: float = 0.5) -> bool:
    """True if no message arrives for quiet_s: a check that something extra is absent."""
    try:
        connection.recv(timeout=quiet_s)
    except TimeoutError:
        return True
    return False


def wait_done(sim: Simulator, client_order_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each order's execution record, once the simulator says every one is done."""
    pending = set(client_order_ids)
    records: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + DEADLINE_S
    while pending:
        for client_order_id in sorted(pending):
            execution = sim.get(f"/orders/{client_order_id}").json()["execution"]
            if execution is not None and execution["done"]:
                records[client_order_id] = execution
                pending.discard(client_order_id)
        if pending:
            if time.monotonic() > deadline:
                pytest.fail(f"orders not done within {DEADLINE_S}s: {sorted(pending)}")
            time.sleep(0.05)
    return records


def logged(sim: Simulator, from_seq: int) -> list[dict[str, Any]]:
    response = sim.get(f"/executions?from_seq={from_seq}")
    assert response.status_code == 200
    return list(response.json()["reports"])


def of_order(reports: Iterable[dict[str, Any]], client_order_id: str) -> list[dict[str, Any]]:
    return [report for report in reports if report["client_order_id"] == client_order_id]


def vwap(fills: list[tuple[int, Decimal]]) -> str | None:
    quantity = sum(qty for qty, _ in fills)
    if quantity == 0:
        return None
    notional = sum((qty * price for qty, price in fills), Decimal(0))
    return str((notional / quantity).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN))


def check_reports_of_one_order(reports: list[dict[str, Any]], quantity: int) -> None:
    """One order's complete reports, in seq order: a valid sequence with consistent numbers."""
    types = [report["exec_type"] for report in reports]
    if types[0] == "rejected":
        assert types == ["rejected"]
    else:
        assert types[0] == "new"
        assert all(exec_type == "partial_fill" for exec_type in types[1:-1]), types
        assert types[-1] in {"fill", "canceled", "expired"}, types
    seqs = [report["seq"] for report in reports]
    assert seqs == sorted(set(seqs))
    assert len({report["exec_id"] for report in reports}) == len(reports)
    assert len({report["exchange_order_id"] for report in reports}) == 1
    fills: list[tuple[int, Decimal]] = []
    for report in reports:
        assert set(report) == REPORT_FIELDS
        assert TRANSACT_TIME.match(report["transact_time"]), report
        if report["exec_type"] in {"partial_fill", "fill"}:
            assert isinstance(report["last_qty"], int)
            assert report["last_qty"] > 0
            assert PRICE.match(report["last_price"]), report
            fills.append((report["last_qty"], Decimal(report["last_price"])))
        else:
            assert (report["last_qty"], report["last_price"]) == (0, None)
        cum_qty = sum(qty for qty, _ in fills)
        assert report["cum_qty"] == cum_qty
        done = report["exec_type"] in TERMINAL
        assert report["leaves_qty"] == (0 if done else quantity - cum_qty)
        assert report["avg_price"] == vwap(fills)
        if report["avg_price"] is not None:
            assert AVG_PRICE.match(report["avg_price"])
    if types[-1] == "fill":
        assert reports[-1]["cum_qty"] == quantity
    else:
        assert reports[-1]["cum_qty"] < quantity


def fold(reports: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each order's state from a feed as a consumer must read it: once per exec_id, in seq order."""
    unique = {report["exec_id"]: report for report in reports}
    states: dict[str, dict[str, Any]] = {}
    for report in sorted(unique.values(), key=lambda report: report["seq"]):
        state = states.setdefault(report["client_order_id"], {"exec_ids": []})
        state["exec_ids"].append(report["exec_id"])
        state.update(
            status=STATUS[report["exec_type"]],
            cum_qty=report["cum_qty"],
            leaves_qty=report["leaves_qty"],
            avg_price=report["avg_price"],
            done=report["exec_type"] in TERMINAL,
        )
    return states


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

    assert sim.get(f"/orders/{forgotten}").status_code == 404
    reports = logged(sim, seq_before + 1)
    assert {report["client_order_id"] for report in reports} == {kept}
    assert reports[0]["seq"] == seq_before + 1
    assert sim.get("/stats").json()["feed_seq"] == reports[-1]["seq"]


# --- Repeatability and the process ---


def test_the_same_seed_works_orders_the_same_way(tmp_path: Path) -> None:
    runs = []
    for _ in range(2):
        with running_simulator(tmp_path, {**FAST, "EXCHANGE_REJECT_RATE": "0.2", "EXCHANGE_CANCEL_RATE": "0.2"}) as sim:
            for index in range(8):
                changes = market(50 + index) if index % 2 else {"quantity": 50 + index}
                wait_done(sim, [place(sim, **changes)])
            runs.append(
                [
                    (report["exec_type"], report["last_qty"], report["last_price"], report["avg_price"])
                    for report in logged(sim, 1)
                ]
            )

    assert runs[0] == runs[1]


def test_sigterm_with_a_connected_client_exits_cleanly(tmp_path: Path) -> None:
    with running_simulator(tmp_path, FAST) as sim, feed(sim, 1) as connection:
        place(sim, **market())
        receive(connection, 1)

        sim.process.signal(signal.SIGTERM)
        assert sim.process.process is not None
        try:
            returncode = sim.process.process.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {DEADLINE_S}s after SIGTERM")
        with pytest.raises(ConnectionClosed):
            while True:
                connection.recv(timeout=DEADLINE_S)

    assert returncode == 0
    # 1001: going away, the server's own close and not a dropped connection.
    assert connection.close_code == 1001
    assert "Traceback" not in sim.output()
