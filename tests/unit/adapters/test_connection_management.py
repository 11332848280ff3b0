"""The management API pusher against a real HTTP server on 127.0.0.1 that records what it gets: the request botocore
sends (POST /@connections/{id} with the JSON message, DELETE to close), and what each answer means to us
(410 -> ConnectionGone, a 5xx or no server -> StreamUnavailable, tried once)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import botocore.session
import pytest
from botocore.config import Config

from chalicelib.adapters.connection_management import PUSH_CONFIG, ManagementApiPusher, management_api_client
from chalicelib.adapters.streaming import ConnectionGone, StreamUnavailable

pytestmark = pytest.mark.unit

# API Gateway's connection ids end in "=": botocore must escape it in the path.
CONNECTION_ID = "L0SM9cOFvHcCIhw="
REGION = Config(region_name="eu-west-1")


@dataclass
class Recorded:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class ManagementApi:
    """What the server got, and the status it answers for each connection id (200 unless set)."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    status_for: dict[str, int] = field(default_factory=dict)


@pytest.fixture
def management_api() -> Iterator[ManagementApi]:
    api = ManagementApi(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            api.requests.append(Recorded(self.command, self.path, body, dict(self.headers.items())))
            connection_id = unquote(self.path.rsplit("/", 1)[-1])
            status = api.status_for.get(connection_id, 200)
            payload = b""
            self.send_response(status)
            if status == 410:
                self.send_header("x-amzn-ErrorType", "GoneException")
                payload = b'{"message": null}'
            elif status >= 400:
                self.send_header("x-amzn-ErrorType", "InternalServerErrorException")
                payload = b'{"message": "broken"}'
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_DELETE = do_GET = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def pusher_for(url: str) -> ManagementApiPusher:
    session = botocore.session.Session()
    session.set_credentials("testing", "testing")
    return ManagementApiPusher(url, client=management_api_client(url, REGION.merge(PUSH_CONFIG), session))


def test_send_posts_the_message_as_json_to_the_connection(management_api: ManagementApi) -> None:
    message = {"stream": "orders", "event": {"id": "00000000000000000001", "type": "placed"}}
    pusher_for(management_api.url).send(CONNECTION_ID, message)
    [request] = management_api.requests
    assert request.method == "POST"
    assert unquote(request.path) == f"/@connections/{CONNECTION_ID}"
    assert json.loads(request.body) == message
    assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256")  # signed, as API Gateway requires


def test_a_stage_path_in_the_endpoint_is_kept(management_api: ManagementApi) -> None:
    pusher_for(management_api.url + "/api").send("c-1", {"stream": "orders", "listening": True})
    [request] = management_api.requests
    assert request.path == "/api/@connections/c-1"


def test_close_deletes_the_connection_and_a_gone_one_is_closed_already(management_api: ManagementApi) -> None:
    pusher = pusher_for(management_api.url)
    management_api.status_for["gone"] = 410
    pusher.close("c-1")
    pusher.close("gone")
    assert [(r.method, r.path) for r in management_api.requests] == [
        ("DELETE", "/@connections/c-1"),
        ("DELETE", "/@connections/gone"),
    ]


def test_410_on_send_is_connection_gone(management_api: ManagementApi) -> None:
    management_api.status_for["gone"] = 410
    with pytest.raises(ConnectionGone):
        pusher_for(management_api.url).send("gone", {"stream": "orders", "listening": True})


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_stream_unavailable_after_one_attempt(management_api: ManagementApi, status: int) -> None:
    management_api.status_for["c-1"] = status
    pusher = pusher_for(management_api.url)
    with pytest.raises(StreamUnavailable):
        pusher.send("c-1", {"stream": "orders", "listening": True})
    assert len(management_api.requests) == 1  # a retried POST could deliver twice: the client replays instead
    with pytest.raises(StreamUnavailable):
        pusher.close("c-1")


def test_no_server_is_stream_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pusher = pusher_for(f"http://127.0.0.1:{port}")
    with pytest.raises(StreamUnavailable):
        pusher.send("c-1", {"stream": "orders", "listening": True})
    with pytest.raises(StreamUnavailable):
        pusher.close("c-1")


def test_the_client_is_made_on_first_use_for_the_endpoint_with_short_timeouts(management_api: ManagementApi) -> None:
    pusher = ManagementApiPusher(management_api.url, client_config=REGION)
    client = pusher.client
    assert client is pusher.client
    assert client.meta.service_model.service_name == "apigatewaymanagementapi"
    assert client.meta.endpoint_url == management_api.url
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (1.0, 3.0)
    assert client.meta.config.region_name == "eu-west-1"
    assert management_api.requests == []
