"""The local API: our Chalice app behind the emulated API Gateway (devstack/api_gateway.py), served by gunicorn.

chalice local's server, which this replaces, writes each answer's headers and
body separately with Nagle's algorithm on: the client's delayed ACK costs
every request ~44 ms (measured on a route that does nothing: 44 ms per request
against ~1 ms here). Why gunicorn with gthread workers rather than waitress or
cheroot (measured with POST /orders on a `make run` stack on this 2-core
machine, keep-alive sessions, 200 requests per level, interleaved rounds):
all three remove the 44 ms (1 client: p50 ~24 ms against 64 ms, beside a floor
of 15 ms for the same three AWS calls made directly) and all reach the
emulator's floor at 16 clients, where moto, not the server, is the limit (the
server spends 5-10 ms of CPU per create). At 64 clients gunicorn held the
floor (74/s for a floor of 73/s) where one waitress process fell to 32-43/s
and cheroot to 33-37/s: one process runs the Python of every request on one
core, two gunicorn workers use both. gunicorn also sets TCP_NODELAY, listens
with a real backlog and is the most widely deployed of the three.

Its workers die with it: SIGTERM or SIGINT to this process stops them
(gunicorn's arbiter), and a worker whose arbiter was killed outright
(SIGKILL) notices that its parent changed within a second and exits
(tests/tooling/test_api_server.py checks both).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from devstack.api_gateway import REPO_ROOT, create_wsgi_app
from devstack.rate_limiter import accounts_table_throttle

# Pending connections the kernel holds for the server (capped by net.core.somaxconn):
# a burst of clients waits in it instead of being reset.
LISTEN_BACKLOG = 2048
# Two processes use both cores past the GIL; threads in each overlap the
# waits on the emulator. More of either only adds contention here.
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 8
# How long a worker may go without reporting to the arbiter before it is
# restarted. A gthread worker's main loop reports every second whatever its
# request threads do, so this catches a wedged worker process, not a slow
# request: the API function's 10 s Lambda timeout is not emulated locally (a
# request that hangs holds one of the worker's threads until it returns).
WORKER_TIMEOUT_S = 30
# How long a stop waits for requests in progress; below ManagedProcess.stop's 10 s grace.
GRACEFUL_STOP_S = 5
# API Gateway keeps idle client connections for a while; clients such as
# requests' Session reuse them, which is the point of keep-alive.
KEEPALIVE_S = 75


class GunicornServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn run from Python, with our settings and our WSGI application (loaded once, before the fork)."""

    def __init__(self, load: Callable[[], Any], settings: Mapping[str, Any]) -> None:
        self._load = load
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        for name, value in self._settings.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        return self._load()


def server_settings(host: str, port: int, workers: int, threads: int) -> dict[str, Any]:
    """gunicorn's settings for the local API."""
    return {
        "bind": [f"{host}:{port}"],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "backlog": LISTEN_BACKLOG,
        "keepalive": KEEPALIVE_S,
        "timeout": WORKER_TIMEOUT_S,
        "graceful_timeout": GRACEFUL_STOP_S,
        # The app (677 ms to import) is loaded once in the arbiter and shared by
        # the forked workers; an app that fails to import stops the server at
        # once instead of workers failing to boot one after another.
        "preload_app": True,
        # The app's and the handlers' log lines go to stdout (as under chalice
        # local); gunicorn's own lines to stderr; no access log, as API Gateway
        # keeps none by default and it would cost every request a write.
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "brokerage-local-api",
    }


def _loopback(host: str) -> str:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise argparse.ArgumentTypeError(f"{host!r}: the local API listens on a loopback address only")
    return host


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.api_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", type=_loopback, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="local", help="a stage of .chalice/config.json (default local)")
    parser.add_argument(
        "--project-dir", type=Path, default=REPO_ROOT, help="the Chalice project to serve (default: this repository)"
    )
    parser.add_argument("--workers", type=_positive, default=DEFAULT_WORKERS, help="worker processes")
    parser.add_argument("--threads", type=_positive, default=DEFAULT_THREADS, help="threads per worker")
    parser.add_argument(
        "--rate-limits",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="throttle each account by its rate limit in the accounts table, shared by every worker (default: on)",
    )
    args = parser.parse_args(argv)
    # As `chalice local` does: the app's and the handlers' log lines on stdout.
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    project_dir = args.project_dir.resolve()

    def load() -> Any:
        # In the arbiter, before the fork: the workers share the throttle's buckets (devstack/rate_limiter.py).
        return create_wsgi_app(args.stage, project_dir, throttle=accounts_table_throttle if args.rate_limits else None)

    GunicornServer(load, server_settings(args.host, args.port, args.workers, args.threads)).run()
    return 0  # run() exits the process itself: 0 after SIGTERM or SIGINT, non-zero if it could not start


if __name__ == "__main__":
    sys.exit(main())
