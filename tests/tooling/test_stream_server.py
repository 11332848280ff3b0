"""The local WebSocket API (devstack/stream_server.py) as a real process, driven by a real `websockets` client.

The fixture app (stream_server_fixture/app.py) answers through the management
endpoint with a botocore apigatewaymanagementapi client, as the real app's pusher does.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.uri import parse_uri

from devstack.processes import LOOPBACK, ManagedProcess, descendant_pids, free_port, python_module

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_PROJECT = Path(__file__).resolve().parent / "stream_server_fixture"
GOOD = {"x-api-key": "good"}
MAX_QUEUED = 20


@dataclass
class StreamServer:
    process: ManagedProcess
    url: str
    management_url: str
    log_path: Path

    def management(self) -> Any:
        return botocore.session.get_session().create_client(
            "apigatewaymanagementapi",
            endpoint_url=f"{self.management_url}/api",  # any path prefix, as API Gateway's stage
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def start_stream_server(log_path: Path, *options: str) -> StreamServer:
    port, management_port = free_port(), free_port()
    management_url = f"http://{LOOPBACK}:{management_port}"
    argv = ["--port", str(port), "--management-port", str(management_port), "--project-dir", str(FIXTURE_PROJECT)]
    process = ManagedProcess(
        "stream",
        python_module("devstack.stream_server", *argv, *options),
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "STREAM_MANAGEMENT_URL": management_url},
        cwd=str(REPO_ROOT),
        ready_url=f"http://{LOOPBACK}:{port}/",  # a plain GET: 426, and no handler runs
        stdout=log_path.open("wb"),
    ).start()
    return StreamServer(process, f"ws://{LOOPBACK}:{port}", management_url, log_path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamServer]:
    running = start_stream_server(tmp_path_factory.mktemp("stream") / "stream.log", "--max-queued", str(MAX_QUEUED))
    try:
        yield running
    finally:
        running.process.stop()


async def receive(ws: ClientConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout_s)))


async def echo(ws: ClientConnection, text: str) -> dict[str, Any]:
    await ws.send(json.dumps({"action": "echo", "text": text}))
    return await receive(ws)


async def watcher(url: str) -> ClientConnection:
    ws = await connect(url, additional_headers=GOOD)
    await ws.send(json.dumps({"action": "watch"}))
    assert (await receive(ws))["watching"] is True
    return ws


async def until(ws: ClientConnection, key: str, value: Any) -> dict[str, Any]:
    while True:
        message = await receive(ws)
        if message.get(key) == value:
            return message


def test_a_handshake_the_connect_handler_refuses_gets_its_status_and_body(server: StreamServer) -> None:
    async def scenario() -> None:
        for url, headers, status, message in [
            (server.url, {}, 401, "x-api-key is missing or wrong"),
            (server.url, {"x-api-key": "bad"}, 401, "x-api-key is missing or wrong"),
            (f"{server.url}/?refuse=403", GOOD, 403, "refused with 403"),
        ]:
            with pytest.raises(InvalidStatus) as refused:
                await connect(url, additional_headers=headers)
            assert refused.value.response.status_code == status
            assert json.loads(refused.value.response.body) == {"message": message}

    asyncio.run(scenario())


def test_a_message_reaches_default_and_the_reply_comes_back_through_the_management_api(server: StreamServer) -> None:
    async def scenario() -> None:
        async with connect(f"{server.url}/?a=1&a=2&b=x", additional_headers=GOOD) as ws:
            reply = await echo(ws, "hello")
            assert reply["echo"] == "hello"
            context = reply["event"]["requestContext"]
            assert context["routeKey"] == "$default" and context["eventType"] == "MESSAGE"
            assert context["connectionId"] == reply["connection_id"] and context["stage"] == "api"
            assert context["identity"]["sourceIp"] == "127.0.0.1" and context["messageId"]
            assert reply["event"]["body"] == json.dumps({"action": "echo", "text": "hello"})
            assert reply["event"]["isBase64Encoded"] is False
            assert [(await echo(ws, str(n)))["echo"] for n in range(5)] == ["0", "1", "2", "3", "4"]

    asyncio.run(scenario())


def test_the_connect_event_has_api_gateways_shape(server: StreamServer) -> None:
    async def scenario() -> None:
        async with (
            await watcher(server.url) as watching,
            connect(f"{server.url}/?token=t1&a=1&a=2", additional_headers=GOOD),
        ):
            seen = await receive(watching)
        event = seen["event"]
        assert event["headers"]["x-api-key"] == "good" and event["multiValueHeaders"]["x-api-key"] == ["good"]
        assert event["queryStringParameters"] == {"token": "t1", "a": "2"}
        assert event["multiValueQueryStringParameters"] == {"token": ["t1"], "a": ["1", "2"]}
        context = event["requestContext"]
        assert (context["routeKey"], context["eventType"], context["apiId"]) == ("$connect", "CONNECT", "local")
        assert context["connectionId"] == seen["connected"]
        assert abs(context["requestTimeEpoch"] - time.time() * 1000) < 10_000 and context["connectedAt"]

    asyncio.run(scenario())


def test_delete_closes_the_socket_then_the_connection_is_gone_and_disconnect_ran(server: StreamServer) -> None:
    management = server.management()

    async def scenario() -> None:
        async with await watcher(server.url) as watching:
            ws = await connect(server.url, additional_headers=GOOD)
            connection_id = (await echo(ws, "me"))["connection_id"]
            info = management.get_connection(ConnectionId=connection_id)
            assert info["Identity"]["SourceIp"] == "127.0.0.1"
            management.delete_connection(ConnectionId=connection_id)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert (await until(watching, "disconnected", connection_id))["code"] == 1000
            for call in (management.post_to_connection, management.get_connection, management.delete_connection):
                kwargs = {"Data": b"x"} if call == management.post_to_connection else {}
                with pytest.raises(management.exceptions.GoneException):
                    call(ConnectionId=connection_id, **kwargs)

    asyncio.run(scenario())


def test_a_client_closing_is_a_disconnect_and_unknown_connections_are_gone(server: StreamServer) -> None:
    management = server.management()

    async def scenario() -> None:
        async with await watcher(server.url) as watching:
            async with connect(server.url, additional_headers=GOOD) as ws:
                connection_id = (await echo(ws, "me"))["connection_id"]
            assert (await until(watching, "disconnected", connection_id))["code"] == 1000
        with pytest.raises(management.exceptions.GoneException):
            management.post_to_connection(ConnectionId=connection_id, Data=b"late")
        with pytest.raises(management.exceptions.GoneException):
            management.post_to_connection(ConnectionId="never-was=", Data=b"x")

    asyncio.run(scenario())


def test_a_client_message_over_128_kb_closes_with_1009(server: StreamServer) -> None:
    async def scenario() -> None:
        async with connect(server.url, additional_headers=GOOD, max_size=None) as ws:
            await ws.send("x" * (128 * 1024 + 1))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1009

    asyncio.run(scenario())


def never_reading_client(url: str) -> tuple[socket.socket, ClientProtocol]:
    """A client that completes the handshake, sends what it is told, and never reads again."""
    protocol = ClientProtocol(parse_uri(url))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small, so that the server's writes back up soon
    host, port = url.removeprefix("ws://").split(":")
    sock.connect((host, int(port.split("/")[0])))
    request = protocol.connect()
    request.headers["x-api-key"] = "good"
    protocol.send_request(request)
    sock.sendall(b"".join(protocol.data_to_send()))
    while protocol.handshake_exc is None and not protocol.events_received() and protocol.state.name == "CONNECTING":
        protocol.receive_data(sock.recv(4096))
    assert protocol.state.name == "OPEN", protocol.handshake_exc
    return sock, protocol


def test_a_client_that_never_reads_delays_no_one_and_is_closed_once_too_far_behind(server: StreamServer) -> None:
    management = server.management()
    sock, protocol = never_reading_client(server.url)

    async def scenario() -> None:
        protocol.send_text(json.dumps({"action": "register", "name": "slow"}).encode())
        sock.sendall(b"".join(protocol.data_to_send()))
        async with connect(server.url, additional_headers=GOOD) as fast:
            await fast.send(json.dumps({"action": "lookup", "name": "slow"}))
            slow_id = (await receive(fast))["connection_id"]
            assert slow_id
            chunk = b"y" * (60 * 1024)
            posted, slowest_post, slowest_echo = 0, 0.0, 0.0
            for _ in range(2000):
                started = time.monotonic()
                try:
                    await asyncio.to_thread(management.post_to_connection, ConnectionId=slow_id, Data=chunk)
                except management.exceptions.GoneException:
                    break
                slowest_post = max(slowest_post, time.monotonic() - started)
                posted += 1
                if posted % 10 == 0:
                    started = time.monotonic()
                    assert (await echo(fast, str(posted)))["echo"] == str(posted)
                    slowest_echo = max(slowest_echo, time.monotonic() - started)
            else:
                raise AssertionError("the client that never reads was never closed")
            assert posted >= MAX_QUEUED  # its queue filled before it was given up
            assert slowest_post < 1.0 and slowest_echo < 1.0, (slowest_post, slowest_echo)
            with pytest.raises(management.exceptions.GoneException):
                management.post_to_connection(ConnectionId=slow_id, Data=b"after")
            assert (await echo(fast, "still here"))["echo"] == "still here"

    try:
        asyncio.run(scenario())
    finally:
        sock.close()


def test_idle_and_overlong_connections_are_closed_as_api_gateway_does(tmp_path: Path) -> None:
    running = start_stream_server(tmp_path / "limits.log", "--idle-timeout", "1", "--max-connection", "3")

    async def scenario() -> None:
        async with connect(running.url, additional_headers=GOOD) as idle:
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(idle.recv(), 5)
            assert idle.close_code == 1001 and time.monotonic() - started >= 0.9
        async with connect(running.url, additional_headers=GOOD) as busy:
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                while True:
                    await echo(busy, "keep alive")
                    await asyncio.sleep(0.3)
            assert busy.close_code == 1001 and 2.5 < time.monotonic() - started < 6

    try:
        asyncio.run(scenario())
    finally:
        running.process.stop()


def test_sigterm_stops_it_cleanly_with_every_connection_disconnected(tmp_path: Path) -> None:
    running = start_stream_server(tmp_path / "stop.log")
    pid = running.process.pid

    async def scenario() -> None:
        async with connect(running.url, additional_headers=GOOD) as ws:
            await echo(ws, "up")
            await asyncio.to_thread(running.process.stop)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1001  # going away: the server closed it before exiting

    asyncio.run(scenario())
    assert running.process.process is not None and running.process.process.returncode == 0
    assert not descendant_pids(pid)
    assert "Traceback" not in running.log_path.read_text()


def test_it_listens_on_loopback_only() -> None:
    from devstack.stream_server import main

    with pytest.raises(SystemExit) as refused:
        main(["--host", "0.0.0.0"])
    assert refused.value.code == 2
