"""Exchange simulator: a stand-in stock exchange on loopback that takes orders over HTTP/JSON."""

from __future__ import annotations

import argparse
import enum
import ipaddress
import itertools
import json
import math
import os
import random
import secrets
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from devstack.processes import LOOPBACK

FAILURE_RATE_ENV = "EXCHANGE_FAILURE_RATE"
LATENCY_ENV = "EXCHANGE_LATENCY_S"
SEED_ENV = "EXCHANGE_SEED"
DEFAULT_FAILURE_RATE = 0.1
DEFAULT_LATENCY_S = 0.5
DEFAULT_PORT = 8001
CONNECTION_NOT_AVAILABLE = "connection not available"
# Far above any order; stops a broken client from making us buffer without bound.
MAX_BODY_BYTES = 64 * 1024
# Idle keep-alive connections each hold a thread; drop the ones a client forgot.
IDLE_CONNECTION_TIMEOUT_S = 120.0
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
ORDER_SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit")


class InvalidValue(ValueError):
    """A knob or request field that the simulator refuses; the message says what is wrong."""


# --- Knobs: the same rules for the environment at start and /admin/config at run time ---


def _finite_number(value: object, name: str) -> float:
    # bool is an int in Python, but `true` is not a number in anyone's JSON.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidValue(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_failure_rate(value: object, name: str = "failure_rate") -> float:
    rate = _finite_number(value, name)
    if not 0.0 <= rate <= 1.0:
        raise InvalidValue(f"{name} must be between 0 and 1, got {value!r}")
    return rate


def check_latency(value: object, name: str = "latency_s") -> float:
    latency = _finite_number(value, name)
    if latency < 0:
        raise InvalidValue(f"{name} must be at least 0, got {value!r}")
    return latency


@dataclass(frozen=True)
class SimConfig:
    failure_rate: float = DEFAULT_FAILURE_RATE
    latency_s: float = DEFAULT_LATENCY_S

    def to_json(self) -> dict[str, float]:
        return {"failure_rate": self.failure_rate, "latency_s": self.latency_s}

    def updated(self, changes: object) -> SimConfig:
        """A copy with the changes of an /admin/config body applied; all checked before any is applied."""
        if not isinstance(changes, dict):
            raise InvalidValue("expected a JSON object with failure_rate and/or latency_s")
        unknown = sorted(set(changes) - {"failure_rate", "latency_s"})
        if unknown:
            raise InvalidValue(f"unknown config keys: {', '.join(unknown)} (allowed: failure_rate, latency_s)")
        if not changes:
            raise InvalidValue("expected failure_rate and/or latency_s")
        config = self
        if "failure_rate" in changes:
            config = replace(config, failure_rate=check_failure_rate(changes["failure_rate"]))
        if "latency_s" in changes:
            config = replace(config, latency_s=check_latency(changes["latency_s"]))
        return config


def _env_number(environ: Mapping[str, str], name: str) -> float | None:
    # An empty value is what `FOO=` in an env file gives; it means "not set", as for most tools.
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidValue(f"{name} must be a number, got {raw!r}") from None


def config_from_env(environ: Mapping[str, str]) -> tuple[SimConfig, int | None]:
    """Knobs and the random seed from the environment; InvalidValue names the variable at fault."""
    config = SimConfig()
    failure_rate = _env_number(environ, FAILURE_RATE_ENV)
    if failure_rate is not None:
        config = replace(config, failure_rate=check_failure_rate(failure_rate, FAILURE_RATE_ENV))
    latency = _env_number(environ, LATENCY_ENV)
    if latency is not None:
        config = replace(config, latency_s=check_latency(latency, LATENCY_ENV))
    seed: int | None = None
    raw_seed = environ.get(SEED_ENV, "").strip()
    if raw_seed:
        try:
            seed = int(raw_seed)
        except ValueError:
            raise InvalidValue(f"{SEED_ENV} must be an integer, got {raw_seed!r}") from None
    return config, seed


# --- Orders ---


@dataclass(frozen=True)
class OrderRequest:
    client_order_id: str
    instrument: str
    side: str
    type: str
    quantity: int
    limit_price: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "client_order_id": self.client_order_id,
            "instrument": self.instrument,
            "side": self.side,
            "type": self.type,
            "quantity": self.quantity,
            "limit_price": self.limit_price,
        }


@dataclass(frozen=True)
class InvalidOrder:
    """A request the exchange refuses for good; client_order_id is kept when readable, to count failures."""

    problem: str
    client_order_id: str | None = None


def _non_empty_string(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(f"{name} must be a non-empty string")
    return value


def _one_of(payload: Mapping[str, Any], name: str, allowed: Sequence[str]) -> str:
    value = payload.get(name)
    if value not in allowed:
        raise InvalidValue(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return cast(str, value)


def parse_order(body: bytes) -> OrderRequest | InvalidOrder:
    """The order in a POST /orders body, or what is wrong with it."""
    try:
        payload = json.loads(body)
    except ValueError:  # also covers bytes that are not UTF-8
        return InvalidOrder("body must be a JSON object")
    if not isinstance(payload, dict):
        return InvalidOrder("body must be a JSON object")
    raw_id = payload.get("client_order_id")
    client_order_id = raw_id if isinstance(raw_id, str) and raw_id.strip() else None
    try:
        missing = [
            name
            for name in ("client_order_id", "instrument", "side", "type", "quantity", "limit_price")
            if name not in payload
        ]
        if missing:
            raise InvalidValue(f"missing field(s): {', '.join(missing)}")
        order_id = _non_empty_string(payload, "client_order_id")
        instrument = _non_empty_string(payload, "instrument")
        side = _one_of(payload, "side", ORDER_SIDES)
        order_type = _one_of(payload, "type", ORDER_TYPES)
        quantity = payload["quantity"]
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise InvalidValue(f"quantity must be a positive integer, got {quantity!r}")
        raw_price = payload["limit_price"]
        limit_price: float | None = None
        if order_type == "limit":
            if raw_price is None:
                raise InvalidValue("limit_price is required for a limit order")
            limit_price = _finite_number(raw_price, "limit_price")
            if limit_price <= 0:
                raise InvalidValue(f"limit_price must be positive, got {raw_price!r}")
        elif raw_price is not None:
            raise InvalidValue("limit_price must be null for a market order")
    except InvalidValue as exc:
        return InvalidOrder(str(exc), client_order_id)
    return OrderRequest(order_id, instrument, side, order_type, quantity, limit_price)


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    INVALID = "invalid"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    client_order_id: str | None = None
    exchange_order_id: str | None = None
    problem: str | None = None


@dataclass
class OrderRecord:
    """Everything the exchange saw for one client order id."""

    exchange_order_id: str | None = None
    order: OrderRequest | None = None
    accepted: int = 0
    duplicates_rejected: int = 0
    failures: int = 0

    def counters(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "duplicates_rejected": self.duplicates_rejected,
            "failures": self.failures,
        }


class ExchangeState:
    """The order book, counters and knobs; every method is safe to call from any thread."""

    def __init__(self, config: SimConfig, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(seed)
        # Exchange order ids stay unique across resets and restarts: a backend that
        # stored one from an earlier run must never see it handed out again.
        self._id_prefix = f"X{secrets.token_hex(3)}-"
        self._id_sequence = itertools.count(1)
        self._orders: dict[str, OrderRecord] = {}
        self._requests = 0
        self._accepted = 0
        self._duplicates_rejected = 0
        self._failures = 0

    @property
    def config(self) -> SimConfig:
        with self._lock:
            return self._config

    def update_config(self, changes: object) -> SimConfig:
        with self._lock:
            self._config = self._config.updated(changes)
            return self._config

    def reset(self) -> None:
        """Forget every order and counter; knobs, the random stream and the id sequence go on."""
        with self._lock:
            self._orders.clear()
            self._requests = self._accepted = self._duplicates_rejected = self._failures = 0

    def submit(self, request: OrderRequest | InvalidOrder) -> Decision:
        """Decide one order entry attempt; the duplicate check and the acceptance are one step."""
        with self._lock:
            self._requests += 1
            # One draw per attempt whatever the rate, so a seeded run gives the same
            # failure pattern even if the rate is changed in between.
            failed = self._rng.random() < self._config.failure_rate
            client_order_id = request.client_order_id
            if failed:
                # The request never reached the matching engine: nothing is decided, so even
                # an invalid order or a duplicate just sees the connection fail.
                self._failures += 1
                if client_order_id is not None:
                    self._orders.setdefault(client_order_id, OrderRecord()).failures += 1
                return Decision(Outcome.FAILED, client_order_id, problem=CONNECTION_NOT_AVAILABLE)
            if isinstance(request, InvalidOrder):
                return Decision(Outcome.INVALID, client_order_id, problem=request.problem)
            record = self._orders.setdefault(request.client_order_id, OrderRecord())
            if record.exchange_order_id is not None:
                record.duplicates_rejected += 1
                self._duplicates_rejected += 1
                return Decision(Outcome.DUPLICATE, request.client_order_id, record.exchange_order_id)
            record.exchange_order_id = f"{self._id_prefix}{next(self._id_sequence):06d}"
            record.order = request
            record.accepted += 1
            self._accepted += 1
            return Decision(Outcome.ACCEPTED, request.client_order_id, record.exchange_order_id)

    def order_view(self, client_order_id: str) -> dict[str, Any] | None:
        """What the exchange knows about one client order id, or None if it never saw it."""
        with self._lock:
            record = self._orders.get(client_order_id)
            if record is None:
                return None
            return {
                "client_order_id": client_order_id,
                "exchange_order_id": record.exchange_order_id,
                **record.counters(),
                "order": None if record.order is None else record.order.to_json(),
            }

    def stats(self) -> dict[str, Any]:
        """Totals over all POST /orders attempts since start or the last reset."""
        with self._lock:
            return {
                "requests": self._requests,
                "accepted": self._accepted,
                "duplicates_rejected": self._duplicates_rejected,
                "failures": self._failures,
                "orders": {order_id: record.counters() for order_id, record in self._orders.items()},
            }


# --- HTTP ---


class ExchangeHTTPServer(ThreadingHTTPServer):
    # Per-connection threads may be asleep in the simulated latency; they must not hold up exit.
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: ExchangeState, verbose: bool = False) -> None:
        super().__init__(address, ExchangeRequestHandler)
        self.state = state
        self.verbose = verbose

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close


class ExchangeRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ExchangeSimulator/1.0"
    timeout = IDLE_CONNECTION_TIMEOUT_S
    server: ExchangeHTTPServer

    @property
    def state(self) -> ExchangeState:
        return self.server.state

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            # The body is read even when unused: on a keep-alive connection, unread
            # bytes would be taken for the start of the next request.
            body = self._read_body()
            path = urlsplit(self.path).path
            self._route(self.command, path, body)
        except BadRequest as exc:
            if exc.close:
                self.close_connection = True
            self._send_json(exc.status, {"error": str(exc)})
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error in the exchange simulator"})

    def _route(self, method: str, path: str, body: bytes) -> None:
        if path.startswith("/orders/") and len(path) > len("/orders/"):
            self._require(method, "GET")
            self._get_order(unquote(path[len("/orders/") :]))
            return
        if path == "/orders":
            self._require(method, "POST")
            self._post_order(body)
        elif path == "/health":
            self._require(method, "GET")
            self._send_json(HTTPStatus.OK, {"status": "ok"})
        elif path == "/stats":
            self._require(method, "GET")
            self._send_json(HTTPStatus.OK, self.state.stats())
        elif path == "/admin/config":
            self._require(method, "GET", "POST")
            if method == "POST":
                self._post_config(body)
            else:
                self._send_json(HTTPStatus.OK, self.state.config.to_json())
        elif path == "/admin/reset":
            self._require(method, "POST")
            self.state.reset()
            self._send_json(HTTPStatus.OK, {"status": "reset"})
        else:
            raise BadRequest(HTTPStatus.NOT_FOUND, f"no such path: {path}")

    def _require(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed here; use {' or '.join(allowed)}")

    def _post_order(self, body: bytes) -> None:
        request = parse_order(body)
        # Sleep outside any lock so concurrent attempts overlap, as round trips to a venue do;
        # the decision comes after, so it sees whatever got accepted in the meantime.
        latency_s = self.state.config.latency_s
        if latency_s > 0:
            time.sleep(latency_s)
        decision = self.state.submit(request)
        if decision.outcome is Outcome.ACCEPTED:
            self._send_json(
                HTTPStatus.CREATED,
                {
                    "client_order_id": decision.client_order_id,
                    "exchange_order_id": decision.exchange_order_id,
                    "status": "new",
                },
            )
        elif decision.outcome is Outcome.DUPLICATE:
            self._send_json(
                HTTPStatus.CONFLICT,
                {
                    "error": "duplicate client order id",
                    "client_order_id": decision.client_order_id,
                    "exchange_order_id": decision.exchange_order_id,
                },
            )
        elif decision.outcome is Outcome.FAILED:
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": CONNECTION_NOT_AVAILABLE})
        else:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": decision.problem})

    def _get_order(self, client_order_id: str) -> None:
        view = self.state.order_view(client_order_id)
        if view is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "unknown client order id"})
        else:
            self._send_json(HTTPStatus.OK, view)

    def _post_config(self, body: bytes) -> None:
        try:
            changes = json.loads(body)
        except ValueError:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "body must be a JSON object") from None
        try:
            config = self.state.update_config(changes)
        except InvalidValue as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None
        self._send_json(HTTPStatus.OK, config.to_json())

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            # Without a length we cannot find the end of the body, so the connection is unusable.
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length", close=True)
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            length = -1
        if length < 0:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"invalid Content-Length: {raw_length!r}", close=True)
        if length > MAX_BODY_BYTES:
            raise BadRequest(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body larger than {MAX_BODY_BYTES} bytes", close=True
            )
        return self.rfile.read(length)

    def _send_json(self, status: HTTPStatus | int, payload: Mapping[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """JSON instead of the stock HTML page, for errors found before any route (bad request line, etc.)."""
        # After a protocol error the stream position is unknown, so the connection ends here.
        self.close_connection = True
        try:
            reason = message or HTTPStatus(code).phrase
        except ValueError:
            reason = message or f"HTTP {code}"
        self.log_error("code %d, message %s", code, reason)
        self._send_json(code, {"error": reason})

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


# --- Process ---


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
    parser = argparse.ArgumentParser(
        prog="python -m devstack.exchange_sim",
        description=__doc__,
        epilog=(
            f"Environment: {FAILURE_RATE_ENV} (0..1, default {DEFAULT_FAILURE_RATE}), "
            f"{LATENCY_ENV} (seconds, default {DEFAULT_LATENCY_S}), {SEED_ENV} (integer, optional)."
        ),
    )
    parser.add_argument("--host", type=loopback_host, default=LOOPBACK, help=f"loopback address (default {LOOPBACK})")
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"0 picks a free port (default {DEFAULT_PORT})"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config, seed = config_from_env(os.environ)
    except InvalidValue as exc:
        print(f"exchange simulator: {exc}", file=sys.stderr, flush=True)
        return 2
    state = ExchangeState(config, seed)
    try:
        server = ExchangeHTTPServer((args.host, args.port), state, verbose=args.verbose)
    except OSError as exc:
        print(f"exchange simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1

    # Signals are blocked before any thread starts, so every thread inherits the mask and
    # the main thread takes them synchronously in sigwait: no handler runs at an arbitrary
    # point while some lock is held.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        serving = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="exchange-http", daemon=True
        )
        serving.start()
        print(f"exchange simulator listening on http://{args.host}:{server.port}", flush=True)
        received = signal.sigwait(STOP_SIGNALS)
        if args.verbose:
            print(f"exchange simulator: {signal.Signals(received).name}, stopping", file=sys.stderr, flush=True)
        server.shutdown()
        serving.join()
    finally:
        server.server_close()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    return 0


if __name__ == "__main__":
    sys.exit(main())
