"""The exchange simulator as its tests drive it: a real process on loopback, its HTTP API, its execution feed.

Shared by test_exchange_sim.py, test_exchange_sim_process.py, test_exchange_sim_faults.py, test_exchange_feed.py
and test_exchange_time_in_force.py.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.sync.client import ClientConnection, connect

from devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE = "devstack.exchange_sim"
# Every simulator setting starts with this; a developer's own must not leak into a test.
KNOB_PREFIX = "EXCHANGE_"
# No failures and no latency unless a test asks for them, so the suite takes seconds.
CALM = {"EXCHANGE_FAILURE_RATE": "0", "EXCHANGE_LATENCY_S": "0", "EXCHANGE_SEED": "7"}
HTTP_TIMEOUT_S = 10.0


@dataclass
class Simulator:
    process: ManagedProcess
    url: str
    port: int
    log: Path
    feed_port: int

    @property
    def feed_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.feed_port}/feed"

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return requests.post(f"{self.url}{path}", json=body, timeout=HTTP_TIMEOUT_S, **kwargs)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=HTTP_TIMEOUT_S)

    def delete(self, path: str) -> requests.Response:
        return requests.delete(f"{self.url}{path}", timeout=HTTP_TIMEOUT_S)

    def output(self) -> str:
        return self.log.read_text()

    def record(self, client_order_id: str) -> requests.Response:
        """The simulator's test-only full record of an order (counters, order, execution)."""
        return self.get(f"/admin/orders/{client_order_id}")

    def status(self, client_order_id: str) -> requests.Response:
        """The venue's order status query, as a client of the exchange asks it."""
        return self.get(f"/orders/{client_order_id}")


def sim_env(knobs: dict[str, str]) -> dict[str, str]:
    """This environment without a developer's own knobs, plus the ones a test chose."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(KNOB_PREFIX)}
    return {**env, **knobs}


@contextmanager
def sim_process(
    port: int, log: Path, knobs: dict[str, str], ready: bool = True, feed_port: int | None = None
) -> Iterator[ManagedProcess]:
    """A started simulator (ready when `ready`), stopped with its whole group on the way out."""
    # Never the default feed port: several simulators run at once in this suite.
    feed = free_port() if feed_port is None else feed_port
    with log.open("wb") as output:
        process = ManagedProcess(
            "exchange-sim",
            python_module(MODULE, "--port", str(port), "--feed-port", str(feed)),
            env=sim_env(knobs),
            cwd=str(REPO_ROOT),
            ready_url=f"http://{LOOPBACK}:{port}/health" if ready else None,
            stdout=output,
            ready_timeout_s=30.0,
        )
        try:
            yield process.start()
        finally:
            process.stop()


@contextmanager
def running_simulator(log_dir: Path, knobs: dict[str, str]) -> Iterator[Simulator]:
    port, feed_port = free_port(), free_port()
    log = log_dir / f"exchange-sim-{port}.log"
    with sim_process(port, log, knobs, feed_port=feed_port) as process:
        yield Simulator(process, f"http://{LOOPBACK}:{port}", port, log, feed_port)


def at_once(
    attempts: int, call: Callable[[], requests.Response]
) -> tuple[list[requests.Response], list[BaseException]]:
    """`call` from `attempts` threads released together: the answers, and what was raised instead of one."""
    start = threading.Barrier(attempts)
    responses: list[requests.Response] = []
    errors: list[BaseException] = []
    guard = threading.Lock()

    def attempt() -> None:
        try:
            start.wait(timeout=HTTP_TIMEOUT_S)
            response = call()
            with guard:
                responses.append(response)
        except BaseException as exc:
            with guard:
                errors.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return responses, errors


def new_id() -> str:
    return f"cl-{uuid.uuid4()}"


def order(client_order_id: str, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "client_order_id": client_order_id,
        "instrument": "AAPL",
        "side": "buy",
        "type": "limit",
        "quantity": 10,
        "limit_price": 187.25,
        **(changes or {}),
    }


# --- The execution feed ---

# Short delays and TTL so that every order is done within a second or two.
FAST_CONFIG: dict[str, float | int | str | None] = {
    "failure_rate": 0.0,
    "latency_s": 0.0,
    "exec_delay_s": 0.02,
    "max_partial_fills": 3,
    "limit_ttl_s": 0.3,
    "reject_rate": 0.0,
    "cancel_rate": 0.0,
    "feed_duplicate_rate": 0.0,
    "feed_reorder_rate": 0.0,
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


def reset(sim: Simulator) -> Simulator:
    """A shared simulator with fast, well-behaved knobs and no orders, whatever the previous test did."""
    assert sim.post("/admin/config", FAST_CONFIG).status_code == 200
    assert sim.post("/admin/reset").status_code == 200
    return sim


def simulator_fixtures(log_dir_name: str, **knobs: float | str | None) -> tuple[object, object]:
    """A test module's fixtures, to assign as `shared_sim, sim = simulator_fixtures(...)`.

    shared_sim: one FAST simulator for the module (its log under log_dir_name); sim: it
    `reset` for each test, then with `knobs` set. Assigned, not imported: pytest finds
    fixtures by the module's names, and an imported fixture used as a parameter reads to
    linters as an unused import shadowed.
    """

    @pytest.fixture(scope="module", name="shared_sim")
    def shared_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
        with running_simulator(tmp_path_factory.mktemp(log_dir_name), FAST) as simulator:
            yield simulator

    @pytest.fixture(name="sim")
    def sim(shared_sim: Simulator) -> Simulator:
        reset(shared_sim)
        if knobs:
            configure(shared_sim, **knobs)
        return shared_sim

    return shared_sim, sim


def configure(sim: Simulator, **knobs: float | str | None) -> None:
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
            execution = sim.record(client_order_id).json()["execution"]
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


# The per-order and /stats cancel/replace counters, before any replace (test_exchange_sim_replace.py).
NO_REPLACES = {
    "replace_requests": 0,
    "replaced": 0,
    "replaces_too_late": 0,
    "replaces_unknown": 0,
    "replace_failures": 0,
}
