"""Child processes that start on loopback, report readiness and always stop."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from devstack.die_with_parent import command as dying_with_parent
from devstack.lifeline import Lifeline
from devstack.ports import PROC, describe_holders, held_by_any

LOOPBACK = "127.0.0.1"


# Ports this process has handed out: the kernel may give the same free port to
# two binds in a row once the first socket is closed, and a caller asking for
# an API port and a feed port then gets one port for both (seen in CI).
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now and that this process has not handed out before."""
    with _handed_out_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def wait_for_http(url: str, timeout_s: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll url until it answers any HTTP status; fail early if process died."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means the server is up
        except (urllib.error.URLError, OSError) as exc:
            last_error = exc
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s: {last_error}")


def parent_pids(proc: Path = PROC) -> dict[int, int]:
    """pid -> parent pid of every process /proc shows (empty without /proc)."""
    parents: dict[int, int] = {}
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (command) state ppid ...": the command may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1].isdigit():
            parents[int(entry.name)] = int(fields[1])
    return parents


def descendant_pids(pid: int, proc: Path = PROC) -> set[int]:
    """Every process below pid (children, their children...), as /proc shows them now."""
    children: dict[int, list[int]] = {}
    for child, parent in parent_pids(proc).items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def confirm_served_by(url: str, pid: int, proc: Path = PROC) -> None:
    """Raise unless the server behind url's port is pid or one of its descendants (a worker of it)."""
    port = urllib.parse.urlsplit(url).port
    if port is None:
        return
    if held_by_any(port, {pid} | descendant_pids(pid, proc), proc) is False:
        raise RuntimeError(f"{url} answered, but port {port} is not ours (pid {pid}): {describe_holders(port, proc)}")


class ManagedProcess:
    """A child process in its own process group, stopped with everything it started.

    Own session so that stop() can signal the whole group (chalice local and
    moto spawn helpers of their own) and Ctrl-C in a terminal reaches only the
    orchestrator, which then stops children in order.

    If the orchestrator dies without stopping it (SIGKILL), the child dies too:
    the kernel kills it (devstack.die_with_parent, when started from the main
    thread: the parent death signal follows the thread that forked), and a
    lifeline, if given, kills its whole group, workers included.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        ready_url: str | None = None,
        cwd: str | None = None,
        stdout: IO[bytes] | int | None = None,
        ready_timeout_s: float = 60.0,
        lifeline: Lifeline | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.ready_url = ready_url
        self.cwd = cwd
        self.stdout = stdout
        self.ready_timeout_s = ready_timeout_s
        self.lifeline = lifeline
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def start(self) -> ManagedProcess:
        if self.process is not None:
            return self  # start_*() helpers hand out started processes; starting again would make a second copy
        # From another thread the signal would come when that thread ends, not this process.
        guarded = self.die_with_parent and threading.current_thread() is threading.main_thread()
        bare_name = os.sep not in self.argv[0]  # a path is resolved in cwd, by the launcher as by Popen
        if guarded and bare_name and shutil.which(self.argv[0], path=self.env.get("PATH", os.defpath)) is None:
            # As Popen would without the launcher, rather than a launcher that exits 1.
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", self.argv[0])
        self.process = subprocess.Popen(  # noqa: S603 - argv is ours, never a shell string
            dying_with_parent(self.argv) if guarded else self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self.stdout,
            stderr=subprocess.STDOUT if self.stdout is not None else None,
            start_new_session=True,
        )
        if self.lifeline is not None:
            self.lifeline.watch(self.process.pid)  # its group id: a new session's leader
        if self.ready_url:
            try:
                wait_for_http(self.ready_url, self.ready_timeout_s, self.process)
                # An answer counts only from our own server: not a stale one on the same port,
                # not one left after ours exited.
                confirm_served_by(self.ready_url, self.process.pid)
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise RuntimeError(f"{self.name} exited with {code} once {self.ready_url} answered")
            except Exception:
                self.stop()
                raise
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} not started"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crashing host would."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()
            self._release()

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process is None or self._stopped:
            return  # once reaped, the group id may belong to someone else
        self._stopped = True
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait()
        # Children that outlived the leader still belong to the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._release()

    def _release(self) -> None:
        # Stopped by us: the lifeline must not signal this group id again (it may be reused).
        if self.lifeline is not None and self.process is not None:
            self.lifeline.release(self.process.pid)

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs a module of this project with the current interpreter."""
    return [sys.executable, "-m", module, *args]
