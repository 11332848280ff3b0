"""How an execution environment's process is started: its command line and its environment (standard library only).

Apart from executor.py, which needs LocalStack, so that `make test` can start
exactly this process without LocalStack (tests/tooling/test_lambda_host_runtime.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

BOOTSTRAP = Path(__file__).resolve().parent / "bootstrap.py"


def runtime_command(python: str, port: int, log_path: Path, parent_pid: int) -> list[str]:
    """The bootstrap on the given interpreter, isolated the way a Lambda runtime is.

    -I: no PYTHON* variables, no user site, not the script's folder on
    sys.path; -S: no site-packages (ours or LocalStack's); -B: no
    __pycache__ written into the deployed code, which is read-only on Lambda;
    -u: log lines reach the log file as they are printed.
    """
    return [
        python,
        "-I",
        "-S",
        "-B",
        "-u",
        str(BOOTSTRAP),
        "--port",
        str(port),
        "--log",
        str(log_path),
        "--parent-pid",
        str(parent_pid),
    ]


def runtime_environment(env_vars: Mapping[str, Any], code: Path, home: Path) -> dict[str, str]:
    """LocalStack's Lambda variables over a minimal base: nothing of LocalStack's own environment leaks in."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        # Each environment its own, as each Lambda sandbox has its own /tmp.
        "HOME": str(home),
        "TMPDIR": str(home),
        **{key: str(value) for key, value in env_vars.items()},
        "LAMBDA_TASK_ROOT": str(code),
    }
