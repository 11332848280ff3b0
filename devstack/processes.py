"""Child processes that start on loopback, report readiness and always stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


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


class ManagedProcess:
    """A child process in its own process group, stopped with everything it started.

    Own session so that stop() can signal the whole group (chalice local and
    moto spawn helpers of their own) and Ctrl-C in a terminal reaches only the
    orchestrator, which then stops children in order.
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
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.ready_url = ready_url
        self.cwd = cwd
        self.stdout = stdout
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def start(self) -> ManagedProcess:
        if self.process is not None:
            return self  # start_*() helpers hand out started processes; starting again would make a second copy
        self.process = subprocess.Popen(  # noqa: S603 - argv is ours, never a shell string
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self.stdout,
            stderr=subprocess.STDOUT if self.stdout is not None else None,
            start_new_session=True,
        )
        if self.ready_url:
            try:
                wait_for_http(self.ready_url, self.ready_timeout_s, self.process)
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

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs a module of this project with the current interpreter."""
    return [sys.executable, "-m", module, *args]
