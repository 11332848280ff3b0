"""The exchange simulator as a process: knobs from its environment, the same seed twice, a start that fails, a stop."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.exceptions import ConnectionClosed

from devstack.processes import LOOPBACK, free_port
from tests.tooling.simulator_support import (
    CALM,
    DEADLINE_S,
    FAST,
    HTTP_TIMEOUT_S,
    Simulator,
    feed,
    logged,
    market,
    new_id,
    order,
    place,
    receive,
    running_simulator,
    sim_process,
    wait_done,
)

pytestmark = pytest.mark.integration

EXIT_TIMEOUT_S = 5.0


# --- Knobs from the environment, and the process itself ---


def test_failure_rate_one_from_the_environment_fails_everything(tmp_path: Path) -> None:
    client_order_id = new_id()
    with running_simulator(tmp_path, {**CALM, "EXCHANGE_FAILURE_RATE": "1.0"}) as sim:
        responses = [sim.post("/orders", order(client_order_id)) for _ in range(3)]
        seen = sim.record(client_order_id).json()
        stats = sim.get("/stats").json()
        config = sim.get("/admin/config").json()

    assert config["failure_rate"] == 1.0
    assert [response.status_code for response in responses] == [503, 503, 503]
    assert all(response.json() == {"error": "connection not available"} for response in responses)
    assert seen["exchange_order_id"] is None
    assert seen["order"] is None
    assert (seen["accepted"], seen["duplicates_rejected"], seen["failures"]) == (0, 0, 3)
    assert (stats["requests"], stats["accepted"], stats["failures"]) == (3, 0, 3)


def test_latency_from_the_environment_is_applied(tmp_path: Path) -> None:
    latency_s = 0.25
    with running_simulator(tmp_path, {**CALM, "EXCHANGE_LATENCY_S": str(latency_s)}) as sim:
        started = time.monotonic()
        response = sim.post("/orders", order(new_id()))
        elapsed = time.monotonic() - started
        config = sim.get("/admin/config").json()

    assert response.status_code == 201
    assert config["latency_s"] == latency_s
    assert elapsed >= latency_s


def test_the_same_seed_gives_the_same_failures(tmp_path: Path) -> None:
    knobs = {**CALM, "EXCHANGE_FAILURE_RATE": "0.5", "EXCHANGE_SEED": "1234"}
    runs = []
    for _ in range(2):
        with running_simulator(tmp_path, knobs) as sim:
            runs.append([sim.post("/orders", order(new_id())).status_code for _ in range(20)])

    assert runs[0] == runs[1]
    assert set(runs[0]) == {201, 503}


def test_the_execution_knobs_come_from_the_environment_or_their_defaults(tmp_path: Path) -> None:
    knobs = {
        **CALM,
        "EXCHANGE_EXEC_DELAY_S": "0.05",
        "EXCHANGE_MAX_PARTIAL_FILLS": "7",
        "EXCHANGE_FEED_REORDER_RATE": "0.25",
        # Empty means unset, as `FOO=` in an env file.
        "EXCHANGE_CANCEL_RATE": "",
    }
    with running_simulator(tmp_path, knobs) as sim:
        config = sim.get("/admin/config").json()

    assert config == {
        "failure_rate": 0.0,
        "latency_s": 0.0,
        "exec_delay_s": 0.05,
        "max_partial_fills": 7,
        # Unset: a day order lives until its session closes.
        "limit_ttl_s": None,
        "reject_rate": 0.02,
        "cancel_rate": 0.03,
        "feed_duplicate_rate": 0.0,
        "feed_reorder_rate": 0.25,
        "status_failure_rate": 0.0,
        "lost_answer_rate": 0.0,
        "lost_answer_order_rate": 0.0,
        "feed_loss_rate": 0.0,
        "limit_outcome": "random",
        "session_close_utc": "20:00",
        "session_length_s": None,
        "price_tick_s": 1.0,
        "price_step_bps": 10,
    }


def test_the_fault_knobs_come_from_the_environment(tmp_path: Path) -> None:
    knobs = {
        **CALM,
        "EXCHANGE_STATUS_FAILURE_RATE": "0.25",
        "EXCHANGE_LOST_ANSWER_RATE": "0.5",
        "EXCHANGE_LOST_ANSWER_ORDER_RATE": "0.125",
        "EXCHANGE_FEED_LOSS_RATE": "1",
    }
    with running_simulator(tmp_path, knobs) as sim:
        config = sim.get("/admin/config").json()

    assert {key: config[key] for key in ("status_failure_rate", "lost_answer_rate", "lost_answer_order_rate")} == {
        "status_failure_rate": 0.25,
        "lost_answer_rate": 0.5,
        "lost_answer_order_rate": 0.125,
    }
    assert config["feed_loss_rate"] == 1.0


def test_the_same_seed_loses_the_same_answers(tmp_path: Path) -> None:
    # Fixed ids: which ones lose every answer is a hash of the seed and the id.
    ids = [f"cl-seeded-{index}" for index in range(24)]
    knobs = {**CALM, "EXCHANGE_LOST_ANSWER_RATE": "0.3", "EXCHANGE_LOST_ANSWER_ORDER_RATE": "0.4"}
    runs = []
    for seed in ("1234", "1234", "99"):
        with running_simulator(tmp_path, {**knobs, "EXCHANGE_SEED": seed}) as sim:
            runs.append([answered(sim, order(client_order_id)) for client_order_id in ids for _ in range(2)])

    assert runs[0] == runs[1]
    assert set(runs[0]) == {201, 409, None}
    # Another seed picks other orders.
    assert runs[2] != runs[0]


def answered(sim: Simulator, body: dict[str, Any]) -> int | None:
    """The status of the answer to an order entry, None when the connection closed without one."""
    try:
        return sim.post("/orders", body).status_code
    except requests.ConnectionError:
        return None


def test_a_feed_port_in_use_stops_the_start(tmp_path: Path) -> None:
    log = tmp_path / "exchange-sim.log"
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        feed_port = taken.getsockname()[1]
        with sim_process(free_port(), log, CALM, ready=False, feed_port=feed_port) as process:
            assert process.process is not None
            returncode = process.process.wait(timeout=30)

    assert returncode == 1
    assert f"cannot listen on 127.0.0.1:{feed_port}" in log.read_text()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EXCHANGE_FAILURE_RATE", "often"),
        ("EXCHANGE_FAILURE_RATE", "1.5"),
        ("EXCHANGE_FAILURE_RATE", "nan"),
        ("EXCHANGE_LATENCY_S", "-1"),
        ("EXCHANGE_LATENCY_S", "slow"),
        ("EXCHANGE_SEED", "0.5"),
        ("EXCHANGE_EXEC_DELAY_S", "-0.1"),
        ("EXCHANGE_MAX_PARTIAL_FILLS", "2.5"),
        ("EXCHANGE_MAX_PARTIAL_FILLS", "0"),
        ("EXCHANGE_LIMIT_TTL_S", "soon"),
        ("EXCHANGE_REJECT_RATE", "2"),
        ("EXCHANGE_CANCEL_RATE", "-0.5"),
        ("EXCHANGE_FEED_DUPLICATE_RATE", "inf"),
        ("EXCHANGE_FEED_REORDER_RATE", "sometimes"),
        ("EXCHANGE_STATUS_FAILURE_RATE", "1.1"),
        ("EXCHANGE_LOST_ANSWER_RATE", "half"),
        ("EXCHANGE_LOST_ANSWER_ORDER_RATE", "-1"),
        ("EXCHANGE_FEED_LOSS_RATE", "nan"),
        ("EXCHANGE_LIMIT_OUTCOME", "sometimes"),
        ("EXCHANGE_SESSION_CLOSE_UTC", "25:00"),
        ("EXCHANGE_PRICE_STEP_BPS", "ten"),
    ],
)
def test_a_bad_knob_stops_the_start_and_names_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    log = tmp_path / "exchange-sim.log"
    with sim_process(free_port(), log, {**CALM, variable: value}, ready=False) as process:
        assert process.process is not None
        returncode = process.process.wait(timeout=30)

    assert returncode != 0
    assert variable in log.read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_it_promptly_and_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    with running_simulator(tmp_path, {**CALM, "EXCHANGE_LATENCY_S": "5"}) as sim:
        # An idle keep-alive connection and a request asleep in the latency must not hold up the exit.
        session = requests.Session()
        assert session.get(f"{sim.url}/health", timeout=HTTP_TIMEOUT_S).status_code == 200
        in_flight = threading.Thread(target=post_ignoring_errors, args=(sim, order(new_id())))
        in_flight.start()
        time.sleep(0.2)

        started = time.monotonic()
        sim.process.signal(signum)
        assert sim.process.process is not None
        try:
            returncode = sim.process.process.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_TIMEOUT_S}s after {signum.name}")
        elapsed = time.monotonic() - started
        session.close()
        in_flight.join(timeout=HTTP_TIMEOUT_S)

    assert returncode == 0
    assert elapsed < EXIT_TIMEOUT_S
    assert "Traceback" not in sim.output()


def post_ignoring_errors(sim: Simulator, body: dict[str, Any]) -> None:
    # The simulator goes away under this request; how the client sees that is not the point.
    with contextlib.suppress(requests.RequestException):
        sim.post("/orders", body)


# --- The feed: repeatability and the process ---


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
