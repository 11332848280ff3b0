"""Kill the process groups of a dead orchestrator: a watcher that outlives it by just long enough.

The orchestrator (`make run`, a test) starts one watcher (this file, run as
a script), and writes to its stdin the process group of each child it
starts (`watch PGID`) and of each it has stopped itself (`release PGID`). The
orchestrator alone holds the pipe's write end, so when it dies, however it
dies (SIGKILL included), the kernel closes it: the watcher reads end-of-file,
SIGKILLs every group still watched, and exits. A clean exit releases every
group first and the watcher kills nothing.

Why a watcher as well as devstack.die_with_parent: the parent death signal
reaches only the direct child, not what it starts (moto's or a multi-worker
server's processes), which stay in the child's process group; and the pipe
closes when the orchestrator *process* dies, whichever thread started what.
The watcher runs in a session of its own so that a terminal's Ctrl-C or
hang-up, meant for the orchestrator, does not take it down first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO


class Lifeline:
    """The orchestrator's end: tells the watcher which process groups to kill if this process dies."""

    def __init__(self, watcher: subprocess.Popen[bytes]) -> None:
        self._watcher = watcher
        self._lock = threading.Lock()  # children may be started and stopped from several threads

    @classmethod
    def start(cls) -> Lifeline:
        watcher = subprocess.Popen(  # noqa: S603 - our own file, no shell
            # By path and isolated: it imports nothing of ours, so any working directory will do.
            [sys.executable, "-I", "-S", str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        return cls(watcher)

    @property
    def watcher_pid(self) -> int:
        return self._watcher.pid

    def watch(self, pgid: int) -> None:
        self._send(f"watch {pgid}")

    def release(self, pgid: int) -> None:
        self._send(f"release {pgid}")

    def close(self, timeout_s: float = 10.0) -> None:
        """End-of-file to the watcher (it kills what is still watched), then reap it."""
        with self._lock, contextlib.suppress(OSError):
            if self._watcher.stdin is not None:
                self._watcher.stdin.close()
        try:
            self._watcher.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._watcher.kill()
            self._watcher.wait()

    def _send(self, line: str) -> None:
        with self._lock:
            stdin = self._watcher.stdin
            if stdin is None or stdin.closed:
                return
            # A watcher that died cannot help any more; the children still have
            # their parent death signal, so the orchestrator carries on.
            with contextlib.suppress(OSError):
                stdin.write(f"{line}\n".encode())
                stdin.flush()


@contextlib.contextmanager
def lifeline() -> Iterator[Lifeline]:
    """A started Lifeline, closed (and its watcher reaped) however the block ends."""
    line = Lifeline.start()
    try:
        yield line
    finally:
        line.close()


def watch_until_end_of_file(commands: IO[bytes]) -> set[int]:
    """Follow watch/release lines until end-of-file; the process groups still watched then."""
    watched: set[int] = set()
    for raw in commands:
        verb, _, value = raw.decode(errors="replace").strip().partition(" ")
        if not value.isdigit():
            continue
        if verb == "watch":
            watched.add(int(value))
        elif verb == "release":
            watched.discard(int(value))
    return watched


def kill_groups(pgids: set[int]) -> None:
    for pgid in sorted(pgids):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def main() -> int:
    # Only end-of-file ends the watch: a Ctrl-C or hang-up meant for the orchestrator must not.
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    kill_groups(watch_until_end_of_file(sys.stdin.buffer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
