"""Importing the handler module must do no network I/O (Lambda cold start, and `chalice package`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import socket

def refuse(*args, **kwargs):
    raise AssertionError(f"network I/O at import time: {args!r}")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

import app

print(sorted(app.app.handler_map))
"""


def test_importing_app_touches_no_network() -> None:
    # A fresh interpreter: this test process has long imported everything.
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "place_orders" in result.stdout
    assert "apply_executions" in result.stdout
