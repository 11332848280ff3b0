"""The HTTP/JSON API: order entry, cancel, cancel/replace, the order status query, the feed replay, stats and admin."""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from devstack.exchange_sim.config import InvalidValue, bearer_accepted
from devstack.exchange_sim.feed_log import parse_from_seq, parse_raw_reports
from devstack.exchange_sim.fill_plans import reference_price
from devstack.exchange_sim.orders import (
    CONNECTION_NOT_AVAILABLE,
    STATUS_NOT_AVAILABLE,
    UNKNOWN_ORDER,
    CancelOutcome,
    Outcome,
    StatusOutcome,
    parse_order,
)
from devstack.exchange_sim.prices import as_price
from devstack.exchange_sim.replace import ReplaceOutcome
from devstack.exchange_sim.state import ExchangeState

# Far above any order; stops a broken client from making us buffer without bound.
MAX_BODY_BYTES = 64 * 1024
# Idle keep-alive connections each hold a thread; drop the ones a client forgot.
IDLE_CONNECTION_TIMEOUT_S = 120.0
ORDERS_PREFIX = "/orders/"
# POST /orders/{orig_client_order_id}/replace: cancel/replace (FIX 35=G), the orig id one URL-encoded segment.
REPLACE_SUFFIX = "/replace"
# The test-only full record of an order; apart from the venue's status query, so that a
# knob making that query fail never breaks a test's bookkeeping.
ADMIN_ORDERS_PREFIX = "/admin/orders/"
# The venue's market data: an instrument's reference price (one URL-encoded path segment).
REFERENCE_PRICES_PREFIX = "/reference-prices/"
# Test-only: an instrument's current price on the path stop orders watch, read or set.
ADMIN_PRICES_PREFIX = "/admin/prices/"
# What a venue serves only to a member presenting its credential (when the simulator has one): what our
# functions call (order entry, cancel, status, reference prices). /health, /stats, /executions (the feed
# log, read by test and chaos checks) and /admin/... are the simulator's own, for harnesses: open.
VENUE_PATHS = ("/orders",)


class ExchangeHTTPServer(ThreadingHTTPServer):
    # Per-connection threads may be asleep in the simulated latency; they must not hold up exit.
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        state: ExchangeState,
        verbose: bool = False,
        feed_serving: Callable[[], bool] = lambda: True,
        credential: str | None = None,
    ) -> None:
        super().__init__(address, ExchangeRequestHandler)
        self.state = state
        self.verbose = verbose
        self.feed_serving = feed_serving
        self.credential = credential

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
            target = urlsplit(self.path)
            self._authenticate(target.path)
            self._route(self.command, target.path, target.query, body)
        except BadRequest as exc:
            if exc.close:
                self.close_connection = True
            self._send_json(exc.status, {"error": str(exc)})
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error in the exchange simulator"})

    def _route(self, method: str, path: str, query: str, body: bytes) -> None:
        if (
            self._route_replace(method, path, body)
            or self._route_one_order(method, path)
            or self._route_raw_feed(method, path, body)
            or self._route_reference_price(method, path)
            or self._route_admin_price(method, path, body)
        ):
            return
        if path == "/orders":
            self._require(method, "POST")
            self._post_order(body)
        elif path == "/executions":
            self._require(method, "GET")
            self._get_executions(query)
        elif path == "/health":
            self._require(method, "GET")
            if self.server.feed_serving():
                self._send_json(HTTPStatus.OK, {"status": "ok"})
            else:
                self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "unavailable", "error": "feed not serving"})
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

    def _route_one_order(self, method: str, path: str) -> bool:
        """Serve a path that names one client order id (URL-encoded as one segment); False for any other path."""
        if path.startswith(ORDERS_PREFIX) and len(path) > len(ORDERS_PREFIX):
            self._require(method, "GET", "DELETE")
            self._order(method, unquote(path[len(ORDERS_PREFIX) :]))
            return True
        if path.startswith(ADMIN_ORDERS_PREFIX) and len(path) > len(ADMIN_ORDERS_PREFIX):
            self._require(method, "GET")
            self._get_order_record(unquote(path[len(ADMIN_ORDERS_PREFIX) :]))
            return True
        return False

    def _route_replace(self, method: str, path: str, body: bytes) -> bool:
        """Serve POST /orders/{orig_client_order_id}/replace; False for any other path.

        A raw `/` before the suffix means the path is not one id segment and a suffix: such a
        path stays the single-order path it always was (an id is URL-encoded, `/` as %2F).
        """
        if not (path.startswith(ORDERS_PREFIX) and path.endswith(REPLACE_SUFFIX)):
            return False
        segment = path[len(ORDERS_PREFIX) : -len(REPLACE_SUFFIX)]
        if not segment or "/" in segment:
            return False
        self._require(method, "POST")
        self._replace_order(unquote(segment), body)
        return True

    def _authenticate(self, path: str) -> None:
        venue = path in VENUE_PATHS or path.startswith((ORDERS_PREFIX, REFERENCE_PRICES_PREFIX))
        if venue and not bearer_accepted(self.server.credential, self.headers.get("Authorization")):
            raise BadRequest(
                HTTPStatus.UNAUTHORIZED, "missing or wrong credential: send Authorization: Bearer <credential>"
            )

    def _route_reference_price(self, method: str, path: str) -> bool:
        """GET /reference-prices/{instrument}: the venue's market data, {"instrument": ..., "price": "123.45"}.

        The price its fills stray around (fill_plans.reference_price), the same in every run;
        our API values market orders by it for the pre-trade notional limit. Like order entry,
        it asks for the credential when the simulator has one.
        """
        if not (path.startswith(REFERENCE_PRICES_PREFIX) and len(path) > len(REFERENCE_PRICES_PREFIX)):
            return False
        self._require(method, "GET")
        if not bearer_accepted(self.server.credential, self.headers.get("Authorization")):
            raise BadRequest(
                HTTPStatus.UNAUTHORIZED, "missing or wrong credential: send Authorization: Bearer <credential>"
            )
        instrument = unquote(path[len(REFERENCE_PRICES_PREFIX) :])
        self._send_json(HTTPStatus.OK, {"instrument": instrument, "price": str(reference_price(instrument))})
        return True

    def _route_admin_price(self, method: str, path: str, body: bytes) -> bool:
        """Test-only GET/POST /admin/prices/{instrument}: the price path stop orders watch (docs/emulators.md).

        POST {"price": 190.5} sets the current price (the path walks on from there) and
        triggers, at once, every acknowledged stop it reaches; the answer names them.
        """
        if not (path.startswith(ADMIN_PRICES_PREFIX) and len(path) > len(ADMIN_PRICES_PREFIX)):
            return False
        self._require(method, "GET", "POST")
        instrument = unquote(path[len(ADMIN_PRICES_PREFIX) :])
        if method == "GET":
            self._send_json(HTTPStatus.OK, self.state.price(instrument))
            return True
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict) or set(payload) != {"price"}:
                raise InvalidValue('body must be a JSON object {"price": <number>}')
            price = as_price(payload["price"])
        except ValueError as exc:  # InvalidValue, and JSON that does not parse
            message = str(exc) if isinstance(exc, InvalidValue) else 'body must be a JSON object {"price": <number>}'
            raise BadRequest(HTTPStatus.BAD_REQUEST, message) from None
        self._send_json(HTTPStatus.OK, self.state.set_price(instrument, price))
        return True

    def _require(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed here; use {' or '.join(allowed)}")

    def _simulate_round_trip(self) -> None:
        # Outside any lock, so that concurrent attempts overlap as round trips to a venue do.
        latency_s = self.state.config.latency_s
        if latency_s > 0:
            time.sleep(latency_s)

    def _post_order(self, body: bytes) -> None:
        request = parse_order(body)
        # The decision comes after the round trip, so it sees whatever got accepted in the meantime.
        self._simulate_round_trip()
        decision = self.state.submit(request)
        if decision.answer_lost:
            # As when the answer is lost on the way back: the exchange decided (an accepted
            # order is worked), the client sees only the connection close, without a response.
            self.close_connection = True
            return
        if decision.outcome is Outcome.ACCEPTED:
            self._send_json(HTTPStatus.CREATED, _accepted(decision.client_order_id, decision.exchange_order_id))
        elif decision.outcome is Outcome.DUPLICATE:
            self._send_json(HTTPStatus.CONFLICT, _duplicate(decision.client_order_id, decision.exchange_order_id))
        elif decision.outcome is Outcome.FAILED:
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": CONNECTION_NOT_AVAILABLE})
        else:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": decision.problem})

    def _replace_order(self, orig_client_order_id: str, body: bytes) -> None:
        """A cancel/replace: the original ends `replaced`, its replacement goes on under an id of its own."""
        request = parse_order(body)
        # As for order entry: the decision comes after the round trip.
        self._simulate_round_trip()
        decision = self.state.replace(orig_client_order_id, request)
        if decision.answer_lost:
            # As for order entry: decided (a replace made stays made), the answer lost on the way back.
            self.close_connection = True
            return
        outcome = decision.outcome
        if outcome is ReplaceOutcome.ACCEPTED:
            answer = _accepted(decision.client_order_id, decision.exchange_order_id)
            self._send_json(HTTPStatus.CREATED, {**answer, "orig_client_order_id": orig_client_order_id})
        elif outcome is ReplaceOutcome.DUPLICATE:
            # Exactly order entry's duplicate: our adapter takes it for "already accepted", so a
            # retried replace whose first answer was lost is idempotent.
            self._send_json(HTTPStatus.CONFLICT, _duplicate(decision.client_order_id, decision.exchange_order_id))
        elif outcome is ReplaceOutcome.UNKNOWN:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": UNKNOWN_ORDER})
        elif outcome is ReplaceOutcome.TOO_LATE:
            error = decision.problem or f"too late to replace: order is {decision.status}"
            self._send_json(HTTPStatus.CONFLICT, {"error": error, "status": decision.status})
        elif outcome is ReplaceOutcome.FAILED:
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": CONNECTION_NOT_AVAILABLE})
        else:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": decision.problem})

    def _order(self, method: str, client_order_id: str) -> None:
        if method == "DELETE":
            self._delete_order(client_order_id)
        else:
            self._get_order(client_order_id)

    def _delete_order(self, client_order_id: str) -> None:
        """A cancel request: the order ends at once, and its `canceled` report is on the feed."""
        self._simulate_round_trip()
        decision = self.state.cancel(client_order_id)
        if decision.outcome is CancelOutcome.CANCELED:
            self._send_json(
                HTTPStatus.OK,
                {
                    "status": "cancel_accepted",
                    "client_order_id": client_order_id,
                    "exchange_order_id": decision.exchange_order_id,
                },
            )
        elif decision.outcome is CancelOutcome.TOO_LATE:
            self._send_json(HTTPStatus.CONFLICT, {"error": f"too late to cancel: order is {decision.status}"})
        elif decision.outcome is CancelOutcome.UNKNOWN:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": UNKNOWN_ORDER})
        else:
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": CONNECTION_NOT_AVAILABLE})

    def _get_order(self, client_order_id: str) -> None:
        """The venue's order status query (FIX OrderStatusRequest): where the exchange has the order."""
        # A round trip to the venue like any other; a status query is no cheaper than a cancel.
        self._simulate_round_trip()
        decision = self.state.status(client_order_id)
        if decision.outcome is StatusOutcome.KNOWN:
            assert decision.answer is not None
            self._send_json(HTTPStatus.OK, decision.answer)
        elif decision.outcome is StatusOutcome.UNKNOWN:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": UNKNOWN_ORDER})
        else:
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": STATUS_NOT_AVAILABLE})

    def _get_order_record(self, client_order_id: str) -> None:
        view = self.state.order_view(client_order_id)
        if view is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": UNKNOWN_ORDER})
        else:
            self._send_json(HTTPStatus.OK, view)

    def _get_executions(self, query: str) -> None:
        try:
            from_seq = parse_from_seq(query)
        except InvalidValue as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None
        log = self.state.feed_log
        reports = [entry.report for entry in log.since(from_seq)]
        last_seq = reports[-1]["seq"] if reports else log.last_seq
        self._send_json(HTTPStatus.OK, {"from_seq": from_seq, "last_seq": last_seq, "reports": reports})

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

    def _route_raw_feed(self, method: str, path: str, body: bytes) -> bool:
        """Test-only POST /admin/feed/raw: put JSON objects on the execution feed as they are (docs/emulators.md)."""
        if path != "/admin/feed/raw":
            return False
        self._require(method, "POST")
        try:
            messages = parse_raw_reports(body)
        except InvalidValue as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None
        seqs = [self.state.feed_log.append_raw(message) for message in messages]
        self._send_json(HTTPStatus.OK, {"seqs": seqs})
        return True

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


def _accepted(client_order_id: str | None, exchange_order_id: str | None) -> dict[str, Any]:
    """The 201 of an accepted order entry, and the start of an accepted replace's."""
    return {"client_order_id": client_order_id, "exchange_order_id": exchange_order_id, "status": "new"}


def _duplicate(client_order_id: str | None, exchange_order_id: str | None) -> dict[str, Any]:
    """The 409 for a client order id already accepted, to order entry and replace alike."""
    return {
        "error": "duplicate client order id",
        "client_order_id": client_order_id,
        "exchange_order_id": exchange_order_id,
    }
