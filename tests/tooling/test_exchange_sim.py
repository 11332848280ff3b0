"""The exchange simulator as a real process on loopback, spoken to over HTTP."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devstack.processes import LOOPBACK
from tests.tooling.simulator_support import (
    CALM,
    HTTP_TIMEOUT_S,
    NO_REPLACES,
    Simulator,
    at_once,
    new_id,
    order,
    running_simulator,
)

pytestmark = pytest.mark.integration

# An order's counters before anything happened to it; a test names only the ones it changes.
NO_COUNTS = {
    "accepted": 0,
    "duplicates_rejected": 0,
    "failures": 0,
    "cancel_requests": 0,
    "canceled_by_request": 0,
    "cancels_too_late": 0,
    "cancel_failures": 0,
    **NO_REPLACES,
    "status_requests": 0,
    "status_failures": 0,
    "lost_answers": 0,
    "lost_reports": 0,
}
NO_CANCELS = {
    "cancel_requests": 0,
    "canceled_by_request": 0,
    "cancels_too_late": 0,
    "cancels_unknown": 0,
    "cancel_failures": 0,
}
# The /stats totals of status queries and of the faults the knobs made.
NO_STATUS_OR_FAULTS = {
    "status_requests": 0,
    "status_failures": 0,
    "status_unknown": 0,
    "lost_answers": 0,
    "lost_reports": 0,
}


@pytest.fixture(scope="module")
def shared_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with running_simulator(tmp_path_factory.mktemp("exchange-sim"), CALM) as sim:
        yield sim


@pytest.fixture(scope="module")
def calm_config(shared_sim: Simulator) -> dict[str, Any]:
    """Every knob as the shared simulator started with them."""
    return dict(shared_sim.get("/admin/config").json())


@pytest.fixture
def sim(shared_sim: Simulator, calm_config: dict[str, Any]) -> Simulator:
    """The shared simulator with calm knobs and no orders, whatever the previous test did."""
    assert shared_sim.post("/admin/config", calm_config).status_code == 200
    assert shared_sim.post("/admin/reset").status_code == 200
    return shared_sim


# --- Start, readiness, and the plain endpoints ---


def test_prints_its_address_and_answers_health(sim: Simulator) -> None:
    response = sim.get("/health")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok"}
    assert f"exchange simulator listening on http://127.0.0.1:{sim.port}" in sim.output()
    assert f"exchange feed listening on ws://127.0.0.1:{sim.feed_port}/feed" in sim.output()


def test_is_quiet_without_verbose(sim: Simulator) -> None:
    sim.get("/health")
    sim.post("/orders", order(new_id()))

    lines = [line for line in sim.output().splitlines() if line.strip()]
    assert lines == [
        f"exchange simulator listening on http://127.0.0.1:{sim.port}",
        f"exchange feed listening on ws://127.0.0.1:{sim.feed_port}/feed",
    ]


def test_unknown_path_is_a_json_404(sim: Simulator) -> None:
    response = sim.get("/nowhere")

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert "error" in response.json()


def test_wrong_method_is_a_json_405(sim: Simulator) -> None:
    response = requests.delete(f"{sim.url}/orders", timeout=HTTP_TIMEOUT_S)

    assert response.status_code == 405
    assert "error" in response.json()


def test_keeps_the_connection_alive_between_requests(sim: Simulator) -> None:
    connection = http.client.HTTPConnection(LOOPBACK, sim.port, timeout=HTTP_TIMEOUT_S)
    try:
        connection.request("GET", "/health")
        first = connection.getresponse()
        assert first.status == 200
        assert json.loads(first.read()) == {"status": "ok"}
        socket_used = connection.sock

        body = json.dumps(order(new_id())).encode()
        connection.request("POST", "/orders", body=body, headers={"Content-Type": "application/json"})
        second = connection.getresponse()
        assert second.status == 201
        json.loads(second.read())

        # http.client drops its socket when the server says it will close.
        assert socket_used is not None
        assert connection.sock is socket_used
    finally:
        connection.close()


def test_a_broken_request_line_gets_json_and_a_closed_connection(sim: Simulator) -> None:
    with socket.create_connection((LOOPBACK, sim.port), timeout=HTTP_TIMEOUT_S) as raw:
        raw.sendall(b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := raw.recv(4096):
            received += chunk

    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"Content-Type: application/json" in head
    assert "error" in json.loads(body)


# --- Order entry ---


def test_accepts_once_then_rejects_the_same_client_order_id(sim: Simulator) -> None:
    client_order_id = new_id()

    first = sim.post("/orders", order(client_order_id))
    again = sim.post("/orders", order(client_order_id))

    assert first.status_code == 201
    accepted = first.json()
    assert accepted["client_order_id"] == client_order_id
    assert accepted["status"] == "new"
    assert accepted["exchange_order_id"]
    assert again.status_code == 409
    assert again.json() == {
        "error": "duplicate client order id",
        "client_order_id": client_order_id,
        "exchange_order_id": accepted["exchange_order_id"],
    }
    seen = sim.record(client_order_id)
    assert seen.status_code == 200
    # How far the exchange has worked the order by now depends on timing; the feed tests cover it.
    view = seen.json()
    execution = view.pop("execution")
    assert execution is None or execution["exec_ids"]
    assert view == {
        "client_order_id": client_order_id,
        "exchange_order_id": accepted["exchange_order_id"],
        **NO_COUNTS,
        "accepted": 1,
        "duplicates_rejected": 1,
        # As posted, with what an old client leaves out: a day order, no expiry, no stop.
        "order": {**order(client_order_id), "time_in_force": "day", "expires_at": None, "stop_price": None},
        "trigger_price": None,
        "lost_exec_ids": [],
        "orig_client_order_id": None,
        "replaced_by": None,
    }


def test_every_accepted_order_gets_its_own_exchange_order_id(sim: Simulator) -> None:
    ids = [sim.post("/orders", order(new_id())).json()["exchange_order_id"] for _ in range(5)]

    assert len(set(ids)) == 5


def test_market_order_without_price_is_accepted(sim: Simulator) -> None:
    response = sim.post("/orders", order(new_id(), {"type": "market", "limit_price": None, "side": "sell"}))

    assert response.status_code == 201


def test_an_order_never_seen_has_no_record(sim: Simulator) -> None:
    response = sim.record(new_id())

    assert response.status_code == 404
    assert response.json() == {"error": "unknown order"}


def test_client_order_ids_are_url_decoded_in_the_path(sim: Simulator) -> None:
    client_order_id = "odd/id with spaces"
    assert sim.post("/orders", order(client_order_id)).status_code == 201

    response = sim.get("/admin/orders/odd%2Fid%20with%20spaces")

    assert response.status_code == 200
    assert response.json()["accepted"] == 1


def test_concurrent_attempts_with_one_client_order_id_are_accepted_exactly_once(sim: Simulator) -> None:
    # Latency keeps all attempts in flight at once, so the decisions really race.
    assert sim.post("/admin/config", {"latency_s": 0.3}).status_code == 200
    client_order_id = new_id()
    attempts = 8
    responses, errors = at_once(attempts, lambda: sim.post("/orders", order(client_order_id)))

    assert errors == []
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * (attempts - 1)
    exchange_ids = {response.json()["exchange_order_id"] for response in responses}
    assert len(exchange_ids) == 1
    seen = sim.record(client_order_id).json()
    assert seen["accepted"] == 1
    assert seen["duplicates_rejected"] == attempts - 1
    assert seen["exchange_order_id"] in exchange_ids


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("not json", "JSON object"),
        ([1, 2], "JSON object"),
        ({"client_order_id": "x"}, "missing field"),
        ("side=buy", "JSON object"),
    ],
)
def test_a_body_that_is_not_an_order_is_400(sim: Simulator, body: Any, problem: str) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)

    response = requests.post(
        f"{sim.url}/orders", data=raw, headers={"Content-Type": "application/json"}, timeout=HTTP_TIMEOUT_S
    )

    assert response.status_code == 400
    assert problem in response.json()["error"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"client_order_id": ""}, "client_order_id"),
        ({"client_order_id": 12}, "client_order_id"),
        ({"instrument": None}, "instrument"),
        ({"side": "short"}, "side"),
        ({"type": "trailing_stop"}, "type"),
        ({"type": "stop", "limit_price": None}, "stop_price"),
        ({"type": "stop_limit", "stop_price": 0}, "stop_price"),
        ({"type": "stop", "limit_price": None, "stop_price": 190.0, "time_in_force": "ioc"}, "time_in_force"),
        ({"time_in_force": "week"}, "time_in_force"),
        ({"time_in_force": "gtd"}, "expires_at"),
        ({"time_in_force": "gtd", "expires_at": "2026-12-02T15:00:00"}, "expires_at"),
        ({"time_in_force": "gtc", "expires_at": "2026-12-02T15:00:00Z"}, "expires_at"),
        ({"stop_price": 190.0}, "stop_price"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": 1.5}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"quantity": "10"}, "quantity"),
        ({"limit_price": None}, "limit_price"),
        ({"limit_price": -1}, "limit_price"),
        ({"limit_price": "187.25"}, "limit_price"),
        ({"type": "market"}, "limit_price"),
    ],
)
def test_an_invalid_field_is_400_and_nothing_is_accepted(sim: Simulator, changes: dict[str, Any], field: str) -> None:
    client_order_id = new_id()

    response = sim.post("/orders", order(client_order_id, changes))

    assert response.status_code == 400
    assert field in response.json()["error"]
    assert sim.record(client_order_id).status_code == 404
    assert sim.get("/stats").json()["accepted"] == 0


def test_stats_and_reset(sim: Simulator) -> None:
    first, second = new_id(), new_id()
    sim.post("/orders", order(first))
    sim.post("/orders", order(first))
    sim.post("/orders", order(second))

    stats = sim.get("/stats").json()
    feed_seq = stats.pop("feed_seq")

    assert stats == {
        "requests": 3,
        "accepted": 2,
        "duplicates_rejected": 1,
        "failures": 0,
        **NO_CANCELS,
        **NO_REPLACES,
        **NO_STATUS_OR_FAULTS,
        "orders": {
            first: {**NO_COUNTS, "accepted": 1, "duplicates_rejected": 1},
            second: {**NO_COUNTS, "accepted": 1},
        },
    }
    assert sim.post("/admin/reset").status_code == 200
    after_reset = sim.get("/stats").json()
    # The feed's seq never starts again within a process: a feed client has checkpointed it.
    assert after_reset.pop("feed_seq") >= feed_seq
    assert after_reset == {
        "requests": 0,
        "accepted": 0,
        "duplicates_rejected": 0,
        "failures": 0,
        **NO_CANCELS,
        **NO_REPLACES,
        **NO_STATUS_OR_FAULTS,
        "orders": {},
    }
    assert sim.record(first).status_code == 404
    # Forgotten means a fresh acceptance, under an exchange order id never handed out before.
    assert sim.post("/orders", order(first)).status_code == 201


# --- Cancels (the feed side is in test_exchange_feed.py) ---


def resting(sim: Simulator) -> str:
    """A live order that stays live: no step of it comes before a cancel does."""
    assert sim.post("/admin/config", {"exec_delay_s": 30.0, "limit_ttl_s": 60.0}).status_code == 200
    client_order_id = new_id()
    assert sim.post("/orders", order(client_order_id)).status_code == 201
    return client_order_id


def test_a_live_order_is_canceled_at_once(sim: Simulator) -> None:
    client_order_id = resting(sim)
    exchange_order_id = sim.record(client_order_id).json()["exchange_order_id"]

    response = sim.delete(f"/orders/{client_order_id}")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "status": "cancel_accepted",
        "client_order_id": client_order_id,
        "exchange_order_id": exchange_order_id,
    }
    view = sim.record(client_order_id).json()
    assert view["execution"]["status"] == "canceled"
    assert (view["execution"]["leaves_qty"], view["execution"]["done"]) == (0, True)
    assert (view["cancel_requests"], view["canceled_by_request"]) == (1, 1)


def test_a_second_cancel_is_too_late_and_changes_nothing(sim: Simulator) -> None:
    client_order_id = resting(sim)
    assert sim.delete(f"/orders/{client_order_id}").status_code == 200
    before = sim.record(client_order_id).json()["execution"]

    again = sim.delete(f"/orders/{client_order_id}")

    assert again.status_code == 409
    assert again.json() == {"error": "too late to cancel: order is canceled"}
    assert sim.record(client_order_id).json()["execution"] == before
    view = sim.record(client_order_id).json()
    assert (view["cancel_requests"], view["canceled_by_request"], view["cancels_too_late"]) == (2, 1, 1)


def test_cancel_of_an_order_never_accepted_is_404(sim: Simulator) -> None:
    # One the exchange never heard of, and one whose every entry attempt failed.
    never_seen, only_failed = new_id(), new_id()
    assert sim.post("/admin/config", {"failure_rate": 1.0}).status_code == 200
    assert sim.post("/orders", order(only_failed)).status_code == 503
    assert sim.post("/admin/config", {"failure_rate": 0.0}).status_code == 200

    responses = [sim.delete(f"/orders/{client_order_id}") for client_order_id in (never_seen, only_failed)]

    assert [response.status_code for response in responses] == [404, 404]
    assert all(response.json() == {"error": "unknown order"} for response in responses)
    # A cancel creates no record of its own: the order is as unknown as before.
    assert sim.record(never_seen).status_code == 404
    assert sim.record(only_failed).json()["execution"] is None


def test_a_cancel_path_is_url_decoded(sim: Simulator) -> None:
    assert sim.post("/admin/config", {"exec_delay_s": 30.0}).status_code == 200
    assert sim.post("/orders", order("odd/id with spaces")).status_code == 201

    response = sim.delete("/orders/odd%2Fid%20with%20spaces")

    assert response.status_code == 200
    assert response.json()["client_order_id"] == "odd/id with spaces"


def test_other_methods_on_an_order_are_405(sim: Simulator) -> None:
    response = requests.put(f"{sim.url}/orders/{new_id()}", timeout=HTTP_TIMEOUT_S)

    assert response.status_code == 405
    assert "DELETE" in response.json()["error"]


def test_a_failed_cancel_is_503_and_changes_nothing(sim: Simulator) -> None:
    client_order_id = resting(sim)
    before = sim.record(client_order_id).json()["execution"]
    assert sim.post("/admin/config", {"failure_rate": 1.0}).status_code == 200

    # Whatever the order's state: the request never reached the matching engine.
    failed = [sim.delete(f"/orders/{target}") for target in (client_order_id, new_id())]

    assert [response.status_code for response in failed] == [503, 503]
    assert all(response.json() == {"error": "connection not available"} for response in failed)
    view = sim.record(client_order_id).json()
    assert view["execution"] == before
    assert (view["cancel_requests"], view["cancel_failures"], view["canceled_by_request"]) == (1, 1, 0)
    assert sim.post("/admin/config", {"failure_rate": 0.0}).status_code == 200
    assert sim.delete(f"/orders/{client_order_id}").status_code == 200


def test_cancel_latency_is_applied(sim: Simulator) -> None:
    client_order_id = resting(sim)
    latency_s = 0.3
    assert sim.post("/admin/config", {"latency_s": latency_s}).status_code == 200

    started = time.monotonic()
    response = sim.delete(f"/orders/{client_order_id}")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= latency_s


def test_concurrent_cancels_of_one_order_cancel_it_exactly_once(sim: Simulator) -> None:
    client_order_id = resting(sim)
    # Latency keeps all attempts in flight at once, so the decisions really race.
    assert sim.post("/admin/config", {"latency_s": 0.3}).status_code == 200
    attempts = 8
    responses, errors = at_once(attempts, lambda: sim.delete(f"/orders/{client_order_id}"))
    statuses = [response.status_code for response in responses]

    assert errors == []
    assert sorted(statuses) == [200] + [409] * (attempts - 1)
    reports = sim.get("/executions").json()["reports"]
    assert [report["exec_type"] for report in reports if report["client_order_id"] == client_order_id] == [
        "new",
        "canceled",
    ]


def test_stats_count_cancels_until_a_reset(sim: Simulator) -> None:
    live, unknown = resting(sim), new_id()
    sim.delete(f"/orders/{live}")
    sim.delete(f"/orders/{live}")
    sim.delete(f"/orders/{unknown}")
    assert sim.post("/admin/config", {"failure_rate": 1.0}).status_code == 200
    sim.delete(f"/orders/{live}")

    stats = sim.get("/stats").json()

    assert {key: stats[key] for key in NO_CANCELS} == {
        "cancel_requests": 4,
        "canceled_by_request": 1,
        "cancels_too_late": 1,
        "cancels_unknown": 1,
        "cancel_failures": 1,
    }
    # Order entry counts stay about order entry.
    assert (stats["requests"], stats["failures"]) == (1, 0)
    assert stats["orders"] == {
        live: {
            **NO_COUNTS,
            "accepted": 1,
            "cancel_requests": 3,
            "canceled_by_request": 1,
            "cancels_too_late": 1,
            "cancel_failures": 1,
        }
    }
    assert sim.post("/admin/reset").status_code == 200
    after_reset = sim.get("/stats").json()
    assert {key: after_reset[key] for key in NO_CANCELS} == NO_CANCELS


# --- Knobs at run time ---


def test_config_changes_at_run_time(sim: Simulator) -> None:
    client_order_id = new_id()
    before = sim.get("/admin/config").json()
    assert (before["failure_rate"], before["latency_s"]) == (0.0, 0.0)

    changed = sim.post("/admin/config", {"failure_rate": 1.0})
    failed = sim.post("/orders", order(client_order_id))
    restored = sim.post("/admin/config", {"failure_rate": 0.0})
    accepted = sim.post("/orders", order(client_order_id))

    assert changed.status_code == 200
    assert changed.json() == {**before, "failure_rate": 1.0}
    assert failed.status_code == 503
    assert failed.json() == {"error": "connection not available"}
    assert restored.json() == before
    assert accepted.status_code == 201
    seen = sim.record(client_order_id).json()
    assert (seen["accepted"], seen["failures"]) == (1, 1)


def test_latency_set_at_run_time_is_applied(sim: Simulator) -> None:
    latency_s = 0.3
    assert sim.post("/admin/config", {"latency_s": latency_s}).json()["latency_s"] == latency_s

    started = time.monotonic()
    response = sim.post("/orders", order(new_id()))
    elapsed = time.monotonic() - started

    assert response.status_code == 201
    assert elapsed >= latency_s


@pytest.mark.parametrize(
    "changes",
    [
        {"failure_rate": 1.5},
        {"failure_rate": -0.1},
        {"failure_rate": "0.5"},
        {"failure_rate": True},
        {"latency_s": -1},
        {"latency_s": None},
        {"failure_rate": 0.5, "latency_s": -1},
        {"exec_delay_s": -0.1},
        {"max_partial_fills": 0},
        {"max_partial_fills": 2.5},
        {"max_partial_fills": True},
        {"limit_ttl_s": "5"},
        {"reject_rate": 1.01},
        {"cancel_rate": None},
        {"feed_duplicate_rate": -1},
        {"feed_reorder_rate": float("inf")},
        {"reject_rate": 0.5, "feed_reorder_rate": 2},
        {"status_failure_rate": 1.5},
        {"lost_answer_rate": -0.5},
        {"lost_answer_order_rate": "0.1"},
        {"feed_loss_rate": True},
        {"feed_loss_rate": 0.5, "status_failure_rate": None},
        {"limit_outcome": "always"},
        {"session_close_utc": "8pm"},
        {"session_length_s": 0},
        {"price_tick_s": 0},
        {"price_step_bps": 2.5},
        {"surprise": 1},
        {},
        [0.5],
    ],
)
def test_bad_config_is_400_and_changes_nothing(sim: Simulator, changes: Any) -> None:
    before = sim.get("/admin/config").json()

    # Raw JSON text, so that Infinity reaches the simulator as the JSON extension it is.
    response = requests.post(
        f"{sim.url}/admin/config",
        data=json.dumps(changes),
        headers={"Content-Type": "application/json"},
        timeout=HTTP_TIMEOUT_S,
    )

    assert response.status_code == 400
    assert "error" in response.json()
    assert sim.get("/admin/config").json() == before
