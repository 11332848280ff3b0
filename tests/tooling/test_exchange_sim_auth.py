"""Venue authentication in the simulator process: a credential demanded on order entry, cancel, status, reference
prices and the feed's handshake; the simulator's own endpoints open; no credential set, nothing demanded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from chalicelib.adapters.exchange import ExchangeUnavailable, HttpExchange
from chalicelib.adapters.venue_credential import StaticCredential
from chalicelib.domain.model import Order, OrderStatus
from devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module
from tests.tooling.simulator_support import (
    FAST,
    HTTP_TIMEOUT_S,
    MODULE,
    REPO_ROOT,
    Simulator,
    new_id,
    order,
    running_simulator,
    sim_env,
)
from tests.unit.venue import market_order

pytestmark = pytest.mark.integration

CREDENTIAL = "venue-credential-for-the-test"
WRONG_HEADERS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer not-the-credential"},
    {"Authorization": f"Basic {CREDENTIAL}"},
    {"Authorization": f"Bearer {CREDENTIAL}x"},
]
RIGHT = {"Authorization": f"Bearer {CREDENTIAL}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with running_simulator(tmp_path_factory.mktemp("auth"), {**FAST, "EXCHANGE_SIM_CREDENTIAL": CREDENTIAL}) as sim:
        yield sim


def call(sim: Simulator, method: str, path: str, headers: dict[str, str], body: object = None) -> requests.Response:
    return requests.request(method, f"{sim.url}{path}", json=body, headers=headers, timeout=HTTP_TIMEOUT_S)


@pytest.mark.parametrize("headers", WRONG_HEADERS, ids=["missing", "wrong", "not-bearer", "longer"])
def test_every_venue_endpoint_refuses_a_missing_or_wrong_credential(
    guarded: Simulator, headers: dict[str, str]
) -> None:
    client_order_id = new_id()
    answers = [
        call(guarded, "POST", "/orders", headers, order(client_order_id)),
        call(guarded, "GET", f"/orders/{client_order_id}", headers),
        call(guarded, "DELETE", f"/orders/{client_order_id}", headers),
        call(guarded, "GET", "/reference-prices/AAPL", headers),
    ]

    assert [answer.status_code for answer in answers] == [401, 401, 401, 401]
    assert all("credential" in answer.json()["error"] for answer in answers)
    # Refused before the order was looked at: the exchange never heard of it.
    assert guarded.record(client_order_id).status_code == 404


def test_the_right_credential_places_queries_and_cancels(guarded: Simulator) -> None:
    client_order_id = new_id()
    resting = order(client_order_id, {"limit_price": 1.0})  # far below the market: it rests until canceled

    placed = call(guarded, "POST", "/orders", RIGHT, resting)
    status = call(guarded, "GET", f"/orders/{client_order_id}", RIGHT)
    canceled = call(guarded, "DELETE", f"/orders/{client_order_id}", RIGHT)
    replay = guarded.get("/executions?from_seq=1")  # the feed log: the simulator's own, open
    price = call(guarded, "GET", "/reference-prices/AAPL", RIGHT)

    assert placed.status_code == 201, placed.text
    assert status.status_code == 200, status.text
    assert canceled.status_code in (200, 409), canceled.text  # 409 if its TTL ended it first
    assert client_order_id in {report["client_order_id"] for report in replay.json()["reports"]}
    assert price.status_code == 200, price.text


def test_the_simulators_own_endpoints_stay_open(guarded: Simulator) -> None:
    assert guarded.get("/health").status_code == 200
    assert guarded.get("/stats").status_code == 200
    assert guarded.get("/executions?from_seq=1").status_code == 200
    assert guarded.get("/admin/config").status_code == 200
    assert guarded.get(f"/admin/orders/{new_id()}").status_code == 404  # open, and the order is unknown


@pytest.mark.parametrize("headers", WRONG_HEADERS, ids=["missing", "wrong", "not-bearer", "longer"])
def test_the_feed_handshake_refuses_a_missing_or_wrong_credential(guarded: Simulator, headers: dict[str, str]) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{guarded.feed_url}?from_seq=1", additional_headers=headers, open_timeout=HTTP_TIMEOUT_S)

    assert refused.value.response.status_code == 401


def test_the_feed_handshake_with_the_right_credential_reads_the_feed(guarded: Simulator) -> None:
    client_order_id = new_id()
    assert call(guarded, "POST", "/orders", RIGHT, order(client_order_id)).status_code == 201

    with connect(f"{guarded.feed_url}?from_seq=1", additional_headers=RIGHT, open_timeout=HTTP_TIMEOUT_S) as connection:
        reports: list[dict[str, Any]] = []
        while client_order_id not in {report["client_order_id"] for report in reports}:
            reports.append(json.loads(connection.recv(timeout=HTTP_TIMEOUT_S)))


def test_our_exchange_adapter_gets_through_with_the_credential_and_not_without(guarded: Simulator) -> None:
    accepted: Order = market_order(10)

    ack = HttpExchange(guarded.url, timeout_s=HTTP_TIMEOUT_S, credential=StaticCredential(CREDENTIAL)).place(accepted)
    state = HttpExchange(guarded.url, timeout_s=HTTP_TIMEOUT_S, credential=StaticCredential(CREDENTIAL)).status(
        accepted.id
    )

    assert ack.exchange_order_id
    assert state is not None
    assert state.status in {OrderStatus.PLACED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED}
    refused = market_order(10)
    with pytest.raises(ExchangeUnavailable, match="401"):
        HttpExchange(guarded.url, timeout_s=HTTP_TIMEOUT_S, credential=StaticCredential("stale")).place(refused)
    assert guarded.record(refused.id).status_code == 404


def test_the_command_line_option_demands_the_credential_too(tmp_path: Path) -> None:
    port, feed_port = free_port(), free_port()
    with (tmp_path / "sim.log").open("wb") as output:
        process = ManagedProcess(
            "exchange-sim",
            python_module(MODULE, "--port", str(port), "--feed-port", str(feed_port), "--credential", CREDENTIAL),
            env=sim_env(FAST),
            cwd=str(REPO_ROOT),
            ready_url=f"http://{LOOPBACK}:{port}/health",
            stdout=output,
            ready_timeout_s=30.0,
        ).start()
        try:
            url = f"http://{LOOPBACK}:{port}/orders"
            without = requests.post(url, json=order(new_id()), timeout=HTTP_TIMEOUT_S)
            with_it = requests.post(url, json=order(new_id()), headers=RIGHT, timeout=HTTP_TIMEOUT_S)
        finally:
            process.stop()
    log = (tmp_path / "sim.log").read_text()

    assert (without.status_code, with_it.status_code) == (401, 201)
    assert "venue credential required" in log
    assert CREDENTIAL not in log


def test_without_a_credential_nothing_is_demanded(tmp_path: Path) -> None:
    with running_simulator(tmp_path, FAST) as sim:
        placed = call(sim, "POST", "/orders", {}, order(new_id()))
        with connect(f"{sim.feed_url}?from_seq=1", open_timeout=HTTP_TIMEOUT_S) as connection:
            first = json.loads(connection.recv(timeout=HTTP_TIMEOUT_S))

    assert placed.status_code == 201
    assert first["seq"] == 1
