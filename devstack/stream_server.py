"""API Gateway's WebSocket side for the local stack: the app's $connect/$default/$disconnect and its management API.

`chalice local` serves HTTP routes only (aws/chalice#1674), so this serves the
same Chalice app (loaded as the local API loads it: devstack/api_gateway.py,
stage config and environment) the way an API Gateway WebSocket API does:

- the handshake invokes the $connect handler with API Gateway's CONNECT event;
  a handler answering other than 2xx refuses the handshake with its status and
  body (no connection opens); each text (or binary) message invokes $default;
  the end of a connection, whoever ends it, invokes $disconnect;
- on --management-port, the management API the app's pusher calls (botocore's
  apigatewaymanagementapi: POST/GET/DELETE .../@connections/{id}, any path
  prefix), with API Gateway's answers (410 GoneException for an unknown or
  closed connection, 413 for a payload over 128 KB);
- API Gateway's limits: 10 min idle timeout, 2 h per connection, 128 KB per
  message (a bigger client message closes with 1009).

Each connection has a bounded outgoing queue drained by a task of its own: a
client that reads slowly delays neither the POST (which only enqueues) nor any
other connection; one that falls MAX_QUEUED_MESSAGES behind is closed (1008)
and is Gone from then on, as a real client that vanished would be. Handlers run
on threads (they post back through this process's management endpoint).

    python -m devstack.stream_server --port 8003 --management-port 8004
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import http
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from chalice.app import Chalice
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from devstack.api_gateway import REPO_ROOT, load_chalice_app
from devstack.api_server import _loopback
from devstack.lambda_context import DEFAULT_REGION, FunctionSpec
from devstack.runner.invocation import LocalFunction

log = logging.getLogger("devstack.stream_server")

API_ID = "local"  # requestContext.apiId; Chalice builds its own (unused) endpoint from it
MAX_MESSAGE_BYTES = 128 * 1024  # API Gateway's WebSocket message limit, both ways
IDLE_TIMEOUT_S = 600.0  # API Gateway closes a connection with no message for 10 minutes
MAX_CONNECTION_S = 7200.0  # and any connection after 2 hours
# Messages waiting for one slow client: past this it is closed (1008) and Gone. Enough for a
# replay of the event log's page size many times over; a client this far behind replays anyway.
MAX_QUEUED_MESSAGES = 1000
HANDLER_THREADS = 32
MANAGEMENT_CALL_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0  # how long a closing handshake may take before the socket is dropped
GONE = {"message": "Gone"}


def _connection_id() -> str:
    # API Gateway's look (16 characters, e.g. "L0SM9cOFvHcCIhw="), URL-safe so that a path holds it as it is.
    return base64.urlsafe_b64encode(os.urandom(11)).decode("ascii")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _request_time(epoch_ms: int) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch_ms / 1000))


def _iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_s)) + f".{int(epoch_s * 1000) % 1000:03d}Z"


@dataclass
class LiveConnection:
    """One client's connection as API Gateway knows it, and what waits to be sent to it."""

    connection_id: str
    source_ip: str
    user_agent: str
    domain_name: str
    connected_at_ms: int
    outgoing: asyncio.Queue[str | bytes]
    websocket: ServerConnection | None = None
    last_active: float = field(default_factory=time.monotonic)
    gone: bool = False
    close_code: int = 1000
    close_reason: str = ""


@dataclass(frozen=True)
class Limits:
    idle_timeout_s: float = IDLE_TIMEOUT_S
    max_connection_s: float = MAX_CONNECTION_S
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_queued_messages: int = MAX_QUEUED_MESSAGES


class WebSocketGateway:
    """The WebSocket API: connections, the app's three handlers, and the management operations on connections.

    Every connection's state lives on the event loop's thread; the management
    server's threads reach it through run_coroutine_threadsafe.
    """

    def __init__(self, app: Chalice, stage: str, api_stage: str, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.api_stage = api_stage
        self.functions = {
            route: LocalFunction(
                config.name,
                app.handler_map[config.name],
                FunctionSpec(f"{app.app_name}-{stage}-{config.name}", role_name=f"{app.app_name}-{stage}"),
            )
            for route, config in app.websocket_handlers.items()
        }
        self.connections: dict[str, LiveConnection] = {}
        self._accepted: dict[uuid.UUID, LiveConnection] = {}  # handshake answered, handler not started yet
        self._executor = concurrent.futures.ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="ws-handler")
        self._closing: set[asyncio.Task[None]] = set()  # closing handshakes under way (the loop keeps weak references)
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- events, as API Gateway sends them ---

    def _request_context(self, live: LiveConnection, route: str, event_type: str) -> dict[str, Any]:
        now = _now_ms()
        request_id = base64.urlsafe_b64encode(os.urandom(6)).decode("ascii")
        return {
            "routeKey": route,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": _request_time(now),
            "messageDirection": "IN",
            "stage": self.api_stage,
            "connectedAt": live.connected_at_ms,
            "requestTimeEpoch": now,
            "identity": {"sourceIp": live.source_ip, "userAgent": live.user_agent},
            "requestId": request_id,
            "domainName": live.domain_name,
            "connectionId": live.connection_id,
            "apiId": API_ID,
        }

    def connect_event(self, live: LiveConnection, request: Request) -> dict[str, Any]:
        headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        for name, value in request.headers.raw_items():
            headers[name] = value
            multi_headers.setdefault(name, []).append(value)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query, keep_blank_values=True)
        event: dict[str, Any] = {"headers": headers, "multiValueHeaders": multi_headers}
        if query:
            event["queryStringParameters"] = {name: values[-1] for name, values in query.items()}
            event["multiValueQueryStringParameters"] = query
        event["requestContext"] = self._request_context(live, "$connect", "CONNECT")
        event["isBase64Encoded"] = False
        return event

    def message_event(self, live: LiveConnection, message: str | bytes) -> dict[str, Any]:
        context = self._request_context(live, "$default", "MESSAGE")
        context["messageId"] = base64.urlsafe_b64encode(os.urandom(6)).decode("ascii")
        binary = isinstance(message, bytes)
        body = base64.b64encode(message).decode("ascii") if isinstance(message, bytes) else message
        return {"requestContext": context, "body": body, "isBase64Encoded": binary}

    def disconnect_event(self, live: LiveConnection) -> dict[str, Any]:
        context = self._request_context(live, "$disconnect", "DISCONNECT")
        context["disconnectStatusCode"] = live.close_code
        context["disconnectReason"] = live.close_reason
        return {"headers": {"Host": live.domain_name}, "requestContext": context, "isBase64Encoded": False}

    async def invoke(self, route: str, event: dict[str, Any]) -> Any:
        """The route's handler on a thread; None if the app has none or it failed (logged)."""
        function = self.functions.get(route)
        if function is None:
            return None
        assert self.loop is not None
        invocation = await self.loop.run_in_executor(self._executor, function.invoke, event)
        return None if invocation.failed else invocation.result

    # --- the WebSocket side ---

    async def process_request(self, websocket: ServerConnection, request: Request) -> Response | None:
        """The handshake: $connect decides; a non-2xx refuses it with the handler's status and body."""
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return None  # not a WebSocket handshake: websockets answers 426, and no handler runs (readiness probes)
        peer = websocket.remote_address
        live = LiveConnection(
            _connection_id(),
            str(peer[0]) if peer else "127.0.0.1",
            request.headers.get("User-Agent", ""),
            request.headers.get("Host", ""),
            _now_ms(),
            asyncio.Queue(self.limits.max_queued_messages),
        )
        if "$connect" not in self.functions:
            self._accepted[websocket.id] = live
            return None
        function = self.functions["$connect"]
        assert self.loop is not None
        invocation = await self.loop.run_in_executor(self._executor, function.invoke, self.connect_event(live, request))
        if invocation.failed:
            return _http_response(500, {"message": "Internal server error"})
        result = invocation.result if isinstance(invocation.result, dict) else {}
        status = int(result.get("statusCode", 200))
        if not 200 <= status < 300:
            log.info("connect refused: %d", status)
            return _http_response(status, result.get("body"), result.get("headers") or {})
        self._accepted[websocket.id] = live
        return None

    def process_response(self, websocket: ServerConnection, request: Request, response: Response) -> None:
        if response.status_code != 101:
            self._accepted.pop(websocket.id, None)  # $connect accepted it, but the handshake failed after all

    async def serve_connection(self, websocket: ServerConnection) -> None:
        live = self._accepted.pop(websocket.id, None)
        if live is None:
            return
        live.websocket = websocket
        live.last_active = time.monotonic()
        self.connections[live.connection_id] = live
        sender = asyncio.create_task(self._send_loop(live))
        watchdog = asyncio.create_task(self._watch_limits(live))
        try:
            async for message in websocket:
                live.last_active = time.monotonic()
                # One at a time per connection: a client's messages reach $default in the order it sent them.
                await self.invoke("$default", self.message_event(live, message))
        except ConnectionClosed:
            pass
        finally:
            live.gone = True
            self.connections.pop(live.connection_id, None)
            sender.cancel()
            watchdog.cancel()
            if not live.close_reason and websocket.close_code is not None:
                # Closed by the client or the network, not by us: what the close frame said (1006 if none).
                live.close_code, live.close_reason = websocket.close_code, websocket.close_reason or ""
            await self.invoke("$disconnect", self.disconnect_event(live))

    async def _send_loop(self, live: LiveConnection) -> None:
        assert live.websocket is not None
        try:
            while True:
                message = await live.outgoing.get()
                await live.websocket.send(message)
        except ConnectionClosed:
            live.gone = True

    async def _watch_limits(self, live: LiveConnection) -> None:
        started = time.monotonic()
        tick = min(1.0, self.limits.idle_timeout_s / 4, self.limits.max_connection_s / 4)
        while not live.gone:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - live.last_active > self.limits.idle_timeout_s:
                self._close(live, 1001, "Going away: idle timeout")
            elif now - started > self.limits.max_connection_s:
                self._close(live, 1001, "Going away: connection duration limit")

    def _close(self, live: LiveConnection, code: int, reason: str) -> None:
        """Gone from now on; the closing handshake goes on in the background."""
        if live.gone:
            return
        live.gone = True
        live.close_code, live.close_reason = code, reason
        self.connections.pop(live.connection_id, None)
        if live.websocket is not None:
            task = asyncio.get_running_loop().create_task(live.websocket.close(code, reason))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # --- the management API (on the loop's thread) ---

    async def post(self, connection_id: str, data: bytes) -> int:
        live = self.connections.get(connection_id)
        if live is None or live.gone:
            return 410
        try:
            message: str | bytes = data.decode("utf-8")
        except UnicodeDecodeError:
            message = data
        try:
            live.outgoing.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("connection %s: %d messages unsent, closing it (1008)", connection_id, live.outgoing.qsize())
            self._close(live, 1008, "Policy violation: too slow to read")
            return 410
        live.last_active = time.monotonic()
        return 200

    async def delete(self, connection_id: str) -> int:
        live = self.connections.get(connection_id)
        if live is None or live.gone:
            return 410
        self._close(live, 1000, "")
        return 204

    async def info(self, connection_id: str) -> dict[str, Any] | None:
        live = self.connections.get(connection_id)
        if live is None or live.gone:
            return None
        idle_s = time.monotonic() - live.last_active
        return {
            "connectedAt": _iso(live.connected_at_ms / 1000),
            "identity": {"sourceIp": live.source_ip, "userAgent": live.user_agent},
            "lastActiveAt": _iso(time.time() - idle_s),
        }

    def call(self, coroutine: Any) -> Any:
        """Run a management coroutine on the loop from a server thread."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(MANAGEMENT_CALL_TIMEOUT_S)

    def shutdown_handlers(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)


def _http_response(status: int, body: Any, headers: Mapping[str, Any] | None = None) -> Response:
    payload = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    lines = Headers()
    lines["Content-Type"] = "application/json"
    for name, value in (headers or {}).items():
        if name.lower() not in ("content-length", "content-type", "connection"):
            lines[name] = str(value)
    lines["Content-Length"] = str(len(payload))
    return Response(status, _reason(status), lines, payload)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


_CONNECTIONS_MARK = "/@connections/"


class ManagementHandler(BaseHTTPRequestHandler):
    """API Gateway's management API: POST, GET and DELETE on .../@connections/{connectionId}."""

    gateway: WebSocketGateway  # set on the subclass the server is built with
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

    def _connection_id(self) -> str | None:
        path = urllib.parse.urlsplit(self.path).path
        _, mark, rest = path.rpartition(_CONNECTIONS_MARK)
        return urllib.parse.unquote(rest) if mark and rest and "/" not in rest else None

    def _answer(self, status: int, body: Any = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if status == 410:
            self.send_header("x-amzn-ErrorType", "GoneException")  # what botocore reads the error code from
        elif status == 413:
            self.send_header("x-amzn-ErrorType", "PayloadTooLargeException")
        elif status == 404:
            self.send_header("x-amzn-ErrorType", "NotFoundException")
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        connection_id = self._connection_id()
        if connection_id is None:
            self._answer(404, {"message": "Not Found"})
        elif len(data) > self.gateway.limits.max_message_bytes:
            self._answer(413, {"message": "Message too long"})
        else:
            status = self.gateway.call(self.gateway.post(connection_id, data))
            self._answer(status, GONE if status == 410 else None)

    def do_DELETE(self) -> None:
        self._on_connection(self.gateway.delete)

    def do_GET(self) -> None:
        self._on_connection(self.gateway.info)

    def _on_connection(self, operation: Callable[[str], Coroutine[Any, Any, Any]]) -> None:
        """DELETE answers a status, GET the connection's description; 410 for a connection that is not there."""
        connection_id = self._connection_id()
        if connection_id is None:
            self._answer(404, {"message": "Not Found"})
            return
        outcome = self.gateway.call(operation(connection_id))
        if outcome is None or outcome == 410:
            self._answer(410, GONE)
        elif isinstance(outcome, int):
            self._answer(outcome)
        else:
            self._answer(200, outcome)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("management: " + format, *args)


def management_server(gateway: WebSocketGateway, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundManagementHandler", (ManagementHandler,), {"gateway": gateway})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


async def run(gateway: WebSocketGateway, host: str, port: int, management_port: int, stop: asyncio.Event) -> None:
    """Serve both sides until stop is set; then close every connection ($disconnect for each) and return."""
    gateway.loop = asyncio.get_running_loop()
    management = management_server(gateway, host, management_port)
    management_thread = threading.Thread(target=management.serve_forever, name="management", daemon=True)
    management_thread.start()
    server: Server
    try:
        async with serve(
            gateway.serve_connection,
            host,
            port,
            process_request=gateway.process_request,
            process_response=gateway.process_response,
            max_size=gateway.limits.max_message_bytes,
            ping_interval=None,  # API Gateway sends no pings: clients keep their connection alive themselves
            close_timeout=CLOSE_TIMEOUT_S,
            server_header=None,
        ) as server:
            print(f"stream server ready: ws://{host}:{port} (management http://{host}:{management_port})", flush=True)
            await stop.wait()
            server.close(close_connections=True)
            await server.wait_closed()
    finally:
        management.shutdown()
        management.server_close()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m devstack.stream_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", type=_loopback, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(env.get("STREAM_PORT", "8003")))
    parser.add_argument("--management-port", type=int, default=int(env.get("STREAM_MANAGEMENT_PORT", "8004")))
    parser.add_argument("--stage", default="local", help="a stage of .chalice/config.json (default local)")
    parser.add_argument("--project-dir", type=Path, default=REPO_ROOT, help="the Chalice project to serve")
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S, help="seconds (API Gateway: 600)")
    parser.add_argument("--max-connection", type=float, default=MAX_CONNECTION_S, help="seconds (API Gateway: 7200)")
    parser.add_argument("--max-queued", type=int, default=MAX_QUEUED_MESSAGES, help="unsent messages per client")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    # One line per handshake and close would bury the handlers' own lines.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    # The Lambda runtime always sets AWS_REGION; Chalice's WebSocket handlers read it on every event.
    os.environ.setdefault("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", DEFAULT_REGION))
    app, config = load_chalice_app(args.stage, args.project_dir.resolve())
    limits = Limits(args.idle_timeout, args.max_connection, MAX_MESSAGE_BYTES, args.max_queued)
    gateway = WebSocketGateway(app, args.stage, str(config.api_gateway_stage or "api"), limits)
    return asyncio.run(_serve_until_signalled(gateway, args.host, args.port, args.management_port))


async def _serve_until_signalled(gateway: WebSocketGateway, host: str, port: int, management_port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run(gateway, host, port, management_port, stop)
    await loop.run_in_executor(None, gateway.shutdown_handlers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
