"""`python -m devstack.exchange_sim`: the command line, and the process that serves HTTP and the feed until a signal."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading
from collections.abc import Sequence

from devstack.exchange_sim.config import (
    CREDENTIAL_ENV,
    KNOBS,
    SEED_ENV,
    InvalidValue,
    SimConfig,
    config_from_env,
    credential_from,
)
from devstack.exchange_sim.feed_server import FEED_PATH, FeedServer
from devstack.exchange_sim.http_api import ExchangeHTTPServer
from devstack.exchange_sim.state import ExchangeState
from devstack.processes import LOOPBACK

DESCRIPTION = (
    "Exchange simulator: a stand-in exchange on loopback; orders in over HTTP/JSON, executions out over WebSocket."
)
DEFAULT_PORT = 8001
DEFAULT_FEED_PORT = 8002
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def loopback_host(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IPv4 loopback address, got {text!r}") from None
    if address.version != 4 or not address.is_loopback:
        raise argparse.ArgumentTypeError(f"only IPv4 loopback addresses are allowed, got {text!r}")
    return text


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {port}")
    return port


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = SimConfig()
    knob_help = ", ".join(
        f"{knob.env} (default {'unset' if getattr(defaults, knob.key) is None else getattr(defaults, knob.key)})"
        for knob in KNOBS
    )
    parser = argparse.ArgumentParser(
        prog="python -m devstack.exchange_sim",
        description=DESCRIPTION,
        epilog=(
            f"Environment: {knob_help}, {SEED_ENV} (integer, optional). Rates are 0..1, times in seconds "
            "(limit_ttl_s and session_length_s unset: none), the session close HH:MM UTC; all but the seed can be "
            "changed at run time with POST /admin/config. POST /admin/reset forgets orders, their pending "
            "executions and the price paths but keeps the feed log: seq never restarts within a process."
        ),
    )
    parser.add_argument("--host", type=loopback_host, default=LOOPBACK, help=f"loopback address (default {LOOPBACK})")
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"HTTP port; 0 picks a free one (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--feed-port",
        type=port_number,
        default=DEFAULT_FEED_PORT,
        help=f"WebSocket execution feed port; 0 picks a free one (default {DEFAULT_FEED_PORT})",
    )
    parser.add_argument(
        "--credential",
        default=None,
        help=(
            "demand `Authorization: Bearer CREDENTIAL` on order entry, cancel, status, reference prices and the feed's "
            "handshake "
            f"(401 otherwise; /health, /stats, /executions and /admin/... stay open); default ${CREDENTIAL_ENV}, "
            "unset or empty: demand none. The environment keeps it out of the process list."
        ),
    )
    parser.add_argument("--verbose", action="store_true", help="log every request and feed client to stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config, seed = config_from_env(os.environ)
    except InvalidValue as exc:
        print(f"exchange simulator: {exc}", file=sys.stderr, flush=True)
        return 2
    credential = credential_from(args.credential, os.environ)
    state = ExchangeState(config, seed)
    feed = FeedServer(state.feed_log, args.host, args.feed_port, verbose=args.verbose, credential=credential)
    try:
        server = ExchangeHTTPServer(
            (args.host, args.port), state, verbose=args.verbose, feed_serving=feed.serving, credential=credential
        )
    except OSError as exc:
        print(f"exchange simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1

    # Signals are blocked before any thread starts, so every thread inherits the mask and
    # the main thread takes them synchronously in sigwait: no handler runs at an arbitrary
    # point while some lock is held.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        try:
            feed.start()
        except OSError as exc:
            print(
                f"exchange simulator: cannot listen on {args.host}:{args.feed_port}: {exc}", file=sys.stderr, flush=True
            )
            return 1
        state.start()
        # Both sockets listen by now, but HTTP requests are answered only once serve_forever
        # runs: whoever polls /health for readiness can already read both lines.
        print(f"exchange simulator listening on http://{args.host}:{server.port}", flush=True)
        print(f"exchange feed listening on ws://{args.host}:{feed.port}{FEED_PATH}", flush=True)
        if credential:
            # Whether, never what: the log must not hold the credential.
            print("venue credential required", flush=True)
        serving = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="exchange-http", daemon=True
        )
        serving.start()
        received = signal.sigwait(STOP_SIGNALS)
        if args.verbose:
            print(f"exchange simulator: {signal.Signals(received).name}, stopping", file=sys.stderr, flush=True)
        state.stop()
        server.shutdown()
        serving.join()
    finally:
        state.stop()
        feed.stop()
        server.server_close()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    return 0


if __name__ == "__main__":
    sys.exit(main())
