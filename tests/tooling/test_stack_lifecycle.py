"""`make run` cannot lie about being ready: children die with a killed stack, a taken port stops it before any "ready".

Real processes on loopback: `python -m devstack.stack` itself, SIGKILLed once
ready, and small orchestrators that start a child with a worker of its own.
Every test kills whatever it saw start, even when it fails, so nothing outlives it.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack.ports import PortInUse, port_holders, require_free_ports
from devstack.processes import LOOPBACK, ManagedProcess, descendant_pids, free_port, python_module

REPO_ROOT = Path(__file__).resolve().parents[2]
# Bounds for waiting, never for judging speed: a loaded 2-core machine starts the stack slowly.
START_DEADLINE_S = 180.0
DEATH_DEADLINE_S = 30.0


def start_time(pid: int) -> str | None:
    """The kernel's start time of pid (tells a process from a later one with the same pid); None once dead."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]  # a zombie is dead, only not yet reaped


def still_running(seen: dict[int, str]) -> dict[int, str]:
    return {pid: started for pid, started in seen.items() if start_time(pid) == started}


def snapshot(pids: set[int]) -> dict[int, str]:
    return {pid: started for pid in pids if (started := start_time(pid)) is not None}


def kill_all(seen: dict[int, str]) -> None:
    for pid in still_running(seen):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def wait_until(condition: Callable[[], bool], deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@dataclass
class Orchestrator:
    """A process under test and every process seen below it (pid -> start time), all killed at the end."""

    process: subprocess.Popen[bytes]
    seen: dict[int, str] = field(default_factory=dict)

    def remember(self, processes: dict[int, str]) -> None:
        self.seen.update(processes)


@contextlib.contextmanager
def orchestrator(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[Orchestrator]:
    """argv as a process of its own; on the way out it and every descendant ever seen are SIGKILLed."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Orchestrator(process, snapshot({process.pid}))
    try:
        yield running
    finally:
        if process.poll() is None:
            running.remember(snapshot(descendant_pids(process.pid)))
        kill_all(running.seen)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def stack_env() -> dict[str, str]:
    env = dict(os.environ)
    # Another test may have pointed this session at its emulator: the stack must start its own moto.
    env.pop("AWS_ENDPOINT_URL", None)
    return env


def stack_argv(api_port: int, exchange_port: int, feed_port: int, state_file: Path) -> list[str]:
    return python_module(
        "devstack.stack",
        *("--port", str(api_port), "--exchange-port", str(exchange_port), "--feed-port", str(feed_port)),
        # Free ports, not 8003/8004: a `make run` may be up beside the tests.
        *("--stream-port", str(free_port()), "--stream-management-port", str(free_port())),
        *("--state-file", str(state_file)),
    )


def test_a_sigkilled_stack_takes_every_process_it_started_with_it(tmp_path: Path) -> None:
    log = tmp_path / "stack.log"
    argv = stack_argv(free_port(), free_port(), free_port(), tmp_path / "running-stack.json")
    with orchestrator(argv, log, stack_env()) as running:
        stack = running.process
        ready = wait_until(lambda: "API ready" in log.read_text() or stack.poll() is not None, START_DEADLINE_S)
        assert ready and stack.poll() is None, log.read_text()
        descendants = snapshot(descendant_pids(stack.pid))
        running.remember(descendants)
        commands = " ".join(Path(f"/proc/{pid}/cmdline").read_text() for pid in descendants)
        parts = ("devstack.moto_server", "devstack.exchange_sim", "feed_bridge", "devstack.runner")
        parts += ("devstack.api_server",)
        for part in parts:
            assert part in commands

        stack.send_signal(signal.SIGKILL)
        stack.wait()

        wait_until(lambda: not still_running(descendants), DEATH_DEADLINE_S)
        assert still_running(descendants) == {}


# A stand-in orchestrator: starts one child that starts a worker in its own group (as a
# multi-worker server does), prints their pids, then waits to be killed.
ORCHESTRATOR = """
import sys, time
from devstack.lifeline import lifeline
from devstack.processes import ManagedProcess
SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]
WORKER = f"import subprocess, time; subprocess.Popen({SLEEP!r}); time.sleep(600)"
use_lifeline = sys.argv[1] == "lifeline"
with lifeline() as line:
    child = ManagedProcess("child", [sys.executable, "-c", WORKER], lifeline=line if use_lifeline else None).start()
    print("started", child.pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize(
    ("mode", "expect_worker_dead"),
    [("lifeline", True), ("parent-death-signal-only", False)],
    ids=["with-lifeline", "without-lifeline"],
)
def test_a_killed_orchestrator_takes_its_children_and_their_workers(
    tmp_path: Path, mode: str, expect_worker_dead: bool
) -> None:
    log = tmp_path / "orchestrator.log"
    with orchestrator([sys.executable, "-c", ORCHESTRATOR, mode], log) as running:
        parent = running.process
        assert wait_until(lambda: "started" in log.read_text() or parent.poll() is not None, START_DEADLINE_S)
        child_pid = int(log.read_text().split("started", 1)[1].split()[0])
        assert wait_until(lambda: len(descendant_pids(child_pid)) == 1, START_DEADLINE_S), log.read_text()
        child = snapshot({child_pid})
        worker = snapshot(descendant_pids(child_pid))
        running.remember({**child, **worker, **snapshot(descendant_pids(parent.pid))})

        parent.send_signal(signal.SIGKILL)
        parent.wait()

        # The direct child always dies: the kernel's parent death signal.
        wait_until(lambda: not still_running(child), DEATH_DEADLINE_S)
        assert still_running(child) == {}
        if expect_worker_dead:
            wait_until(lambda: not still_running(worker), DEATH_DEADLINE_S)
            assert still_running(worker) == {}
        else:
            # Shows why the lifeline exists: the signal does not reach the child's own children.
            assert still_running(worker) == worker


@pytest.mark.parametrize("taken", ["api", "exchange", "feed"])
def test_a_taken_port_stops_the_stack_before_anything_is_ready(tmp_path: Path, taken: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        held = int(holder.getsockname()[1])
        ports = {name: held if name == taken else free_port() for name in ("api", "exchange", "feed")}
        log = tmp_path / "stack.log"
        argv = stack_argv(ports["api"], ports["exchange"], ports["feed"], tmp_path / "running-stack.json")
        with orchestrator(argv, log, stack_env()) as running:
            code = running.process.wait(timeout=START_DEADLINE_S)
        output = log.read_text()

    assert code != 0, output
    assert f"port {held}" in output
    assert f"pid {os.getpid()}" in output
    # The message quotes the holder's command line (this pytest, maybe with "-k ready"): look for the ready lines only.
    assert "API ready" not in output
    assert not (tmp_path / "running-stack.json").exists()


class _Answering(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


def test_a_readiness_probe_answered_by_someone_else_does_not_count() -> None:
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Answering)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    impostor_url = f"http://{LOOPBACK}:{server.server_address[1]}/health"
    child = ManagedProcess(
        "silent", [sys.executable, "-c", "import time; time.sleep(600)"], ready_url=impostor_url, ready_timeout_s=30
    )
    try:
        with pytest.raises(RuntimeError, match="not ours") as refused:
            child.start()
        assert f"pid {os.getpid()}" in str(refused.value)
        assert not child.alive()
    finally:
        child.stop()
        server.shutdown()
        server.server_close()


def test_port_holders_names_the_listening_process_and_duplicates_are_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        assert [h.pid for h in port_holders(port)] == [os.getpid()]
        with pytest.raises(PortInUse, match=f"port {port} \\(API\\) is in use, held by pid {os.getpid()}"):
            require_free_ports({"API": port})
    other = free_port()
    with pytest.raises(PortInUse, match=f"port {other} is asked for both the API and the exchange"):
        require_free_ports({"API": other, "exchange": other})
    require_free_ports({"API": other})  # free again: no error


def test_free_port_never_hands_out_the_same_port_twice() -> None:
    # CI once got one port for both the API and the feed from two calls in a row.
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
