"""A client of the order stream for the tests, the chaos scenario and the benchmark: a real `websockets` client.

It connects as a browser or a program would (an API key as `Authorization: Bearer`, as `x-api-key`, or a
single-use `?token=`), sends `{"action": "listen", "after": ...}`, and reads every message on a thread of
its own, stamping each with the wall-clock time it arrived (the benchmark's latency) and keeping the
events deduplicated by id, as the README tells clients to (delivery is at least once).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import quote, urlsplit

import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from devstack.stack import DEMO_LIMITS, DEMO_RATE_LIMIT, LocalStack

STREAM = "orders"
ISIN = "DE0007164600"
OPEN_TIMEOUT_S = 10.0
READ_POLL_S = 0.2
WAKE_CAP_S = 0.1
VANISH_WAIT_S = 2.0
KeyHeader = Literal["bearer", "x-api-key"]


class HandshakeRefused(Exception):
    """The server answered the upgrade with an HTTP status: no connection opened."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"handshake refused: HTTP {status} {body[:200]!r}")
        self.status = status
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Received:
    """One text message as the client got it."""

    at: float  # time.time() when it was read: comparable with the exchange's transact_time
    message: dict[str, Any]


def stream_url_with_token(url: str, token: str) -> str:
    return f"{url}?token={quote(token, safe='')}"


def key_headers(api_key: str | None, header: KeyHeader = "bearer") -> dict[str, str]:
    if api_key is None:
        return {}
    return {"Authorization": f"Bearer {api_key}"} if header == "bearer" else {"x-api-key": api_key}


def small_receive_buffer_socket(url: str, receive_buffer: int) -> socket.socket:
    """A TCP socket to the stream server with a tiny receive buffer, so that a client that reads nothing stalls fast."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Set before connect: the window the kernel advertises is fixed by then.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
    return sock


@dataclass
class StreamClient:
    """One connection to the order stream; `received` holds every message, `events` the events by id, deduplicated."""

    url: str
    api_key: str | None = None
    header: KeyHeader = "bearer"
    token: str | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    # A client that reads nothing (the slow client): the frames it buffers before its reader stops.
    max_queue: int = 1024
    receive_buffer: int | None = None
    read: bool = True  # False: connect and send, never read (a client that is stuck)

    received: list[Received] = field(default_factory=list)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    closed: threading.Event = field(default_factory=threading.Event)
    close_code: int | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._connection: ClientConnection | None = None
        self._reader: threading.Thread | None = None

    # --- connecting ---

    def connect(self) -> StreamClient:
        """Open the connection; HandshakeRefused if the server answers the upgrade with a status instead."""
        url = stream_url_with_token(self.url, self.token) if self.token is not None else self.url
        headers = {**key_headers(self.api_key, self.header), **self.extra_headers}
        sock = small_receive_buffer_socket(url, self.receive_buffer) if self.receive_buffer else None
        try:
            self._connection = connect(
                url,
                additional_headers=headers,
                open_timeout=OPEN_TIMEOUT_S,
                close_timeout=1,
                max_queue=self.max_queue,
                sock=sock,
                # A connection that outlives this call (the reader thread, vanish): websockets' direct style.
                legacy=True,
                # No keepalive pings of our own: a client that reads nothing would time itself out on them.
                ping_interval=None,
            )
        except InvalidStatus as refused:
            raise HandshakeRefused(refused.response.status_code, bytes(refused.response.body or b"")) from None
        if self.read:
            self._reader = threading.Thread(target=self._read, name="stream-client", daemon=True)
            self._reader.start()
        return self

    def __enter__(self) -> StreamClient:
        return self.connect() if self._connection is None else self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """A clean close (the close handshake)."""
        if self._connection is not None:
            self._connection.close()
        if self._reader is not None:
            self._reader.join(5)

    def vanish(self) -> None:
        """Drop the connection as a crashed client would: a TCP reset, no close frame."""
        if self._connection is None:
            return
        sock = self._connection.socket
        # Closed already (by the server, or by the client's own end): nothing to reset.
        with contextlib.suppress(OSError):
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # Ends websockets' own reading thread (it reads EOF, then closes the socket: RST, by the
            # linger). A close() from here would leave that thread waiting on a closed socket for ever.
            sock.shutdown(socket.SHUT_RD)
        websockets_reader = self._connection.recv_events_thread
        websockets_reader.join(VANISH_WAIT_S)
        if websockets_reader.is_alive():
            # Paused (a client that reads nothing, its queue full): it will not read the EOF. Reset from here.
            sock.close()
        if self._reader is not None:
            self._reader.join(VANISH_WAIT_S)

    # --- talking ---

    def send(self, message: Mapping[str, Any] | str) -> None:
        assert self._connection is not None, "not connected"
        self._connection.send(message if isinstance(message, str) else json.dumps(message))

    def listen(self, after: str | None = None) -> None:
        self.send({"action": "listen"} if after is None else {"action": "listen", "after": after})

    def listen_and_wait(self, after: str | None = None, timeout_s: float = 15.0) -> None:
        """Listen, and return once the server says the replay is done (`listening: true`)."""
        already = self.count(is_listening)
        self.listen(after)
        self.wait_for(lambda: self.count(is_listening) > already, timeout_s, "the listening message")

    # --- reading ---

    def _read(self) -> None:
        assert self._connection is not None
        try:
            while True:
                try:
                    text = self._connection.recv(timeout=READ_POLL_S)
                except TimeoutError:
                    continue
                self._keep(Received(time.time(), json.loads(text)))
        except ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd is not None else None
        except OSError:
            pass  # the socket went away under us (vanish)
        finally:
            with self._changed:
                self.closed.set()
                self._changed.notify_all()

    def _keep(self, received: Received) -> None:
        with self._changed:
            self.received.append(received)
            event = received.message.get("event")
            if isinstance(event, dict):
                if event["id"] in self.events:
                    self.duplicates += 1
                else:
                    self.events[event["id"]] = event
            self._changed.notify_all()

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.message for r in self.received]

    def count(self, predicate: Callable[[dict[str, Any]], bool]) -> int:
        with self._lock:
            return sum(1 for r in self.received if predicate(r.message))

    def errors(self) -> list[str]:
        return [str(m["error"]) for m in self.messages() if "error" in m]

    def event_list(self) -> list[dict[str, Any]]:
        """The distinct events, by id (the order they happened in)."""
        with self._lock:
            return [self.events[event_id] for event_id in sorted(self.events)]

    def first_arrivals(self) -> list[str]:
        """Event ids in the order each first arrived."""
        seen: dict[str, None] = {}
        with self._lock:
            for r in self.received:
                event = r.message.get("event")
                if isinstance(event, dict):
                    seen.setdefault(event["id"], None)
        return list(seen)

    def last_event_id(self) -> str | None:
        """The cursor to resume from: the highest event id seen."""
        with self._lock:
            return max(self.events) if self.events else None

    def events_of(self, order_id: str) -> list[dict[str, Any]]:
        return [e for e in self.event_list() if e["order"]["id"] == order_id]

    def wait_for(self, condition: Callable[[], Any], timeout_s: float, what: str = "the condition") -> Any:
        """Wait until condition() is truthy (checked on every message); AssertionError with the messages otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tail = self.messages()[-5:]
                raise AssertionError(f"{what} not within {timeout_s}s; closed={self.closed.is_set()}; last: {tail}")
            # Woken by the next message; the short cap covers one that came between the check and the wait.
            with self._changed:
                self._changed.wait(min(remaining, WAKE_CAP_S))

    def wait_closed(self, timeout_s: float) -> bool:
        return self.closed.wait(timeout_s)


def is_listening(message: Mapping[str, Any]) -> bool:
    return message.get("stream") == STREAM and message.get("listening") is True


def refused(url: str, **client: Any) -> HandshakeRefused:
    """The refusal a connect gets; AssertionError if a connection opened instead."""
    try:
        StreamClient(url, **client).connect().close()
    except HandshakeRefused as refusal:
        return refusal
    raise AssertionError(f"a connection opened with {client}")


# --- The REST side the stream tests compare with ---


TERMINAL = frozenset({"filled", "canceled", "rejected", "expired", "failed", "replaced"})
HTTP_TIMEOUT_S = 30.0
EVENTS_PAGE_MAX = 500


def stream_url_of(stack: LocalStack) -> str:
    """The stack's WebSocket stream URL (ws://127.0.0.1:<port>)."""
    return stack.stream_url


class Account:
    """One account's REST client (every request carries its key), and stream clients with the same key."""

    def __init__(self, api_url: str, stream_url: str, account_id: str, api_key: str) -> None:
        self.api_url = api_url
        self.stream_url = stream_url
        self.account_id = account_id
        self.api_key = api_key
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        # One session per thread: tests post from several threads at once.
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
            self._local.session.headers["Authorization"] = f"Bearer {self.api_key}"
        return cast(requests.Session, self._local.session)

    def stream(self, **options: Any) -> StreamClient:
        return StreamClient(self.stream_url, api_key=self.api_key, **options)

    def post_order(self, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "market", "side": "buy", "instrument": ISIN, "quantity": 10}
        body.update(changes)
        response = self.session.post(f"{self.api_url}/orders", json=body, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def order(self, order_id: str) -> dict[str, Any]:
        response = self.session.get(f"{self.api_url}/orders/{order_id}", timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def done(self, order_id: str) -> dict[str, Any] | None:
        """The order once it is in a final status, else None."""
        order = self.order(order_id)
        return order if order["status"] in TERMINAL else None

    def executions(self, order_id: str) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = []
        params: dict[str, Any] = {}
        while True:
            response = self.session.get(
                f"{self.api_url}/orders/{order_id}/executions", params=params, timeout=HTTP_TIMEOUT_S
            )
            assert response.status_code == 200, response.text
            page = response.json()
            listed += page["executions"]
            if not page.get("next"):
                return listed
            params = {"after": page["next"]}

    def events_page(self, after: str | None = None, limit: int | str | None = None) -> requests.Response:
        params = {name: value for name, value in (("after", after), ("limit", limit)) if value is not None}
        return self.session.get(f"{self.api_url}/events", params=params, timeout=HTTP_TIMEOUT_S)

    def all_events(self, after: str | None = None) -> list[dict[str, Any]]:
        """The account's whole log after the cursor (from the oldest event kept without one), read page by page."""
        events: list[dict[str, Any]] = []
        while True:
            response = self.events_page(after, EVENTS_PAGE_MAX)
            assert response.status_code == 200, response.text
            page = response.json()
            events += page["events"]
            if not page["events"]:
                return events
            after = page["next"]

    def stream_token(self) -> dict[str, Any]:
        response = self.session.post(f"{self.api_url}/stream/tokens", timeout=HTTP_TIMEOUT_S)
        assert response.status_code in (200, 201), response.text
        return dict(response.json())


def new_account(stack: LocalStack, purpose: str) -> Account:
    """A fresh account (its first key creates it) with the demo account's risk and rate limits: its log holds
    only its events, and its tests page and poll faster than the default 10 requests/s allow."""
    account_id = f"{purpose}-{uuid.uuid4().hex[:8]}"
    api_key = stack.new_api_key(account_id)
    stack.set_limits(account_id, DEMO_LIMITS)
    stack.set_rate_limit(account_id, DEMO_RATE_LIMIT)
    return Account(stack.api_url, stream_url_of(stack), account_id, api_key)
