"""A loopback TCP proxy in front of the AWS emulator that can make it unreachable for a while."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator

from devstack.processes import LOOPBACK

CHUNK_BYTES = 64 * 1024
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
# SO_LINGER on, timeout 0: close() sends a RST instead of a FIN, which a client
# sees at once as "connection reset", like a host that refuses it.
_LINGER_RESET = struct.pack("ii", 1, 0)


class TcpProxy:
    """Forwards every connection on 127.0.0.1:<port> to the target; `outage()` cuts all of them.

    The proxy runs an asyncio loop on a thread of its own, so a caller blocked
    in HTTP requests never stalls the traffic it forwards. While down, it keeps
    listening (so no other process can take the port meanwhile) but resets every
    connection at once: nothing a client sends then can reach the emulator, and
    the emulator keeps its in-memory state for when the proxy is up again.
    """

    def __init__(self, target_port: int, target_host: str = LOOPBACK) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.connections = 0  # forwarded
        self.resets = 0  # connections cut by an outage, open ones and new ones alike
        self._down = False
        # Open connections: client side -> its upstream side.
        self._open: dict[asyncio.StreamWriter, asyncio.StreamWriter] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def down(self) -> bool:
        return self._down

    def start(self) -> TcpProxy:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise TimeoutError(f"proxy did not start within {START_TIMEOUT_S}s")
        if self._error is not None:
            raise RuntimeError("proxy failed to start") from self._error
        return self

    def stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopped.set)
        self._thread.join(STOP_TIMEOUT_S)

    def cut(self) -> None:
        """From now on every connection is reset, the ones already open too."""
        self._call(self._cut)

    def restore(self) -> None:
        self._call(self._restore)

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        self.cut()
        try:
            yield
        finally:
            self.restore()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _call(self, action: Callable[[], None]) -> None:
        # Runs on the proxy's loop and waits for it, so that when cut() returns
        # no connection opened before it can still carry a byte.
        assert self._loop is not None, "proxy not started"
        done = threading.Event()

        def run() -> None:
            try:
                action()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(STOP_TIMEOUT_S):
            raise TimeoutError("proxy loop did not answer")

    def _cut(self) -> None:
        self._down = True
        for client, upstream in list(self._open.items()):
            self._reset(client)
            upstream.transport.abort()
        self._open.clear()

    def _restore(self) -> None:
        self._down = False

    def _reset(self, writer: asyncio.StreamWriter) -> None:
        self.resets += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        writer.transport.abort()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(), which is waiting for it
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        async with server:
            await self._stopped.wait()
            for client, upstream in list(self._open.items()):
                client.transport.abort()
                upstream.transport.abort()
            # Let the handlers see their aborted connections and end, rather than
            # being cancelled mid-read when asyncio.run closes the loop.
            if self._handlers:
                await asyncio.wait(self._handlers, timeout=STOP_TIMEOUT_S)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        if self._down:
            self._reset(client_writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self._reset(client_writer)
            return
        if self._down:  # an outage began while we were connecting
            self._reset(client_writer)
            upstream_writer.transport.abort()
            return
        self.connections += 1
        self._open[client_writer] = upstream_writer
        try:
            await asyncio.gather(self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer))
        finally:
            self._open.pop(client_writer, None)
            for writer in (client_writer, upstream_writer):
                writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(CHUNK_BYTES):
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            # The other side went away (or an outage aborted it): end both directions.
            writer.transport.abort()
