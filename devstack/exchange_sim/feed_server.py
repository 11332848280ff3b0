"""The execution feed over WebSocket: each client reads the feed log from its own cursor."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import traceback
from http import HTTPStatus
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from devstack.exchange_sim.config import InvalidValue, bearer_accepted
from devstack.exchange_sim.feed_log import FeedEntry, FeedLog, parse_from_seq

FEED_PATH = "/feed"
# A report held back by the reorder knob goes out after the next one; when no next one
# comes (the last report of a burst), it must not be stuck for good.
REORDER_HOLD_S = 1.0
# Feed clients only ever need to send a close frame; anything big is a broken client.
FEED_MAX_INCOMING_BYTES = 4096
# Bounds the time a client that stopped reading can hold up a shutdown.
FEED_CLOSE_TIMEOUT_S = 1.0
FEED_START_TIMEOUT_S = 10.0
FEED_STOP_TIMEOUT_S = 3.0


class UnknownPath(InvalidValue):
    """A feed request for a path other than the feed's."""


def _feed_from_seq(request_path: str) -> int:
    """from_seq of a feed request; InvalidValue if the path or the query is wrong."""
    parts = urlsplit(request_path)
    if parts.path != FEED_PATH:
        raise UnknownPath(f"no such path: {parts.path}; use {FEED_PATH}?from_seq=N")
    return parse_from_seq(parts.query)


class FeedServer:
    """The WebSocket endpoint, on an asyncio loop in a thread of its own.

    Each client has a cursor into the feed log and reads from there: a client that reads
    slowly only falls behind in the log, and neither the engine nor other clients wait for it.
    """

    def __init__(
        self, log: FeedLog, host: str, port: int, verbose: bool = False, credential: str | None = None
    ) -> None:
        self._log = log
        # Demanded on the opening handshake (Authorization: Bearer ...); None: anyone may read the feed.
        self._credential = credential
        self._host = host
        self._requested_port = port
        self._verbose = verbose
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="exchange-feed", daemon=True)
        self._started = threading.Event()
        self._serving = threading.Event()
        self._startup_error: OSError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        # Replaced on every append and set, so each waiting client wakes once per append.
        self._wakeup: asyncio.Event | None = None

    def start(self) -> None:
        """Listen; OSError if the port cannot be had."""
        self._thread.start()
        if not self._started.wait(FEED_START_TIMEOUT_S):
            raise OSError(f"feed did not start within {FEED_START_TIMEOUT_S}s")
        if self._startup_error is not None:
            raise self._startup_error

    def serving(self) -> bool:
        return self._serving.is_set() and self._thread.is_alive()

    def stop(self) -> None:
        """Close every client connection (code 1001) and the listener."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive():
            self._thread.join(timeout=FEED_STOP_TIMEOUT_S + FEED_CLOSE_TIMEOUT_S + 1)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            traceback.print_exc(file=sys.stderr)
        finally:
            self._serving.clear()
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._wakeup = asyncio.Event()
        try:
            server = await serve(
                self._handle,
                self._host,
                self._requested_port,
                process_request=self._check_request,
                close_timeout=FEED_CLOSE_TIMEOUT_S,
                max_size=FEED_MAX_INCOMING_BYTES,
            )
        except OSError as exc:
            self._startup_error = exc
            self._started.set()
            return
        self.port = int(server.sockets[0].getsockname()[1])
        self._log.add_listener(self._notify_threadsafe)
        self._serving.set()
        self._started.set()
        await self._stop.wait()
        self._serving.clear()
        server.close()
        # A client that stopped reading gets its connection aborted after close_timeout.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), FEED_STOP_TIMEOUT_S)

    def _notify_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        previous, self._wakeup = self._wakeup, asyncio.Event()
        if previous is not None:
            previous.set()

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not bearer_accepted(self._credential, request.headers.get("Authorization")):
            # Before the path is looked at: who may not read the feed learns nothing about it.
            return connection.respond(
                HTTPStatus.UNAUTHORIZED, "missing or wrong credential: send Authorization: Bearer <credential>\n"
            )
        try:
            _feed_from_seq(request.path)
        except InvalidValue as exc:
            status = HTTPStatus.NOT_FOUND if isinstance(exc, UnknownPath) else HTTPStatus.BAD_REQUEST
            return connection.respond(status, f"{exc}\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        cursor = _feed_from_seq(connection.request.path if connection.request else FEED_PATH)
        # Reports logged before the client connected are replay: sent exactly as logged.
        # The duplicate and reorder knobs apply only to the ones after.
        live_from = self._log.last_seq + 1
        if self._verbose:
            print(f"exchange feed: client {connection.remote_address} from_seq={cursor}", file=sys.stderr, flush=True)
        closed = asyncio.ensure_future(self._discard_incoming(connection))
        loop = asyncio.get_running_loop()
        held: FeedEntry | None = None
        held_until = 0.0
        try:
            while True:
                # Taken before reading the log: an append after the read sets this very event.
                wakeup = self._wakeup
                entries = self._log.since(cursor)
                for entry in entries:
                    cursor = entry.seq + 1
                    if entry.seq < live_from:
                        await connection.send(entry.text)
                    elif held is not None:
                        await self._send_live(connection, entry)
                        await self._send_live(connection, held)
                        held = None
                    elif entry.reorder:
                        held, held_until = entry, loop.time() + REORDER_HOLD_S
                    else:
                        await self._send_live(connection, entry)
                if entries:
                    continue
                assert wakeup is not None
                woken = asyncio.ensure_future(wakeup.wait())
                timeout = None if held is None else max(0.0, held_until - loop.time())
                done, _ = await asyncio.wait({woken, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                if closed in done:
                    return
                if not done and held is not None:
                    await self._send_live(connection, held)
                    held = None
        except ConnectionClosed:
            return
        finally:
            closed.cancel()

    @staticmethod
    async def _send_live(connection: ServerConnection, entry: FeedEntry) -> None:
        await connection.send(entry.text)
        if entry.duplicate:
            await connection.send(entry.text)

    @staticmethod
    async def _discard_incoming(connection: ServerConnection) -> None:
        # Reading is what notices a close from the client (and the server's own close at
        # shutdown); what a client sends means nothing here.
        with contextlib.suppress(ConnectionClosed):
            async for _ in connection:
                pass
