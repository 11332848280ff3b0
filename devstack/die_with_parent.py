"""Run a command that the kernel kills when the process that started it dies (Linux), even by SIGKILL.

    python -I -S devstack/die_with_parent.py PARENT_PID -- ARGV...

Sets PR_SET_PDEATHSIG, then replaces itself with ARGV (same pid, so the
caller's handle, process group and signals all stay valid). Done in a process
of its own because Python 3.11's subprocess has no such option and its
preexec_fn is unsafe in a parent that runs threads. The signal survives exec
but not fork: what ARGV starts in turn is covered by devstack.lifeline, which
kills the whole process group.

The kernel sends the signal when the *thread* that forked this process ends,
so callers start it from a thread that lives as long as they do (the main one).
Elsewhere than Linux the command runs unprotected.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1
# The child would otherwise keep serving a port after the stack is gone, which
# is what made a restarted stack report stale servers as ready; SIGKILL because
# the stack that would have stopped it politely is already dead.
_SIGNAL = signal.SIGKILL


def command(argv: list[str], parent_pid: int | None = None) -> list[str]:
    """argv wrapped so that the command dies with parent_pid (this process by default)."""
    parent = os.getpid() if parent_pid is None else parent_pid
    # Run by path, isolated and without site (~60 ms of .pth files saved per child): it imports
    # nothing outside the standard library, so it works from any working
    # directory (LocalStack runs in its own) and whatever PYTHONPATH the command is given.
    return [sys.executable, "-I", "-S", str(Path(__file__).resolve()), str(parent), "--", *argv]


def set_parent_death_signal() -> bool:
    """Ask the kernel for _SIGNAL when the parent dies; False where prctl does not exist."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(_SIGNAL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: python die_with_parent.py PARENT_PID -- ARGV...", file=sys.stderr)
        return 2
    parent_pid, target = int(argv[0]), argv[2:]
    set_parent_death_signal()
    # A parent that died before prctl took effect sends nothing: we were re-parented already.
    if os.getppid() != parent_pid:
        print(f"die_with_parent: parent {parent_pid} is gone, not starting {target[0]}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    os.execvp(target[0], target)  # noqa: S606 - argv comes from our own orchestrator, no shell


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
