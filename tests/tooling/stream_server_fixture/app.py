"""A Chalice app for the stream server's tests: WebSocket handlers that answer through the management API.

Handlers run in the stream server's process, on its threads; they post back
with a botocore apigatewaymanagementapi client, as the real app's pusher does.
Messages are JSON {"action": ...}:
- echo {text}: answers {"echo": text, "connection_id": <its own id>};
- register {name} / lookup {name}: names a connection, and tells another its id;
- watch: this connection is told {"disconnected": id, "code": n} whenever another ends.
The connect handler refuses a handshake without `x-api-key: good` with 401 {"message": ...}
(?refuse=403 refuses with 403), and tells a watcher what event it got.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import botocore.session
from chalice.app import Chalice, Response, WebsocketEvent

app = Chalice(app_name="stream-server-fixture")
app.experimental_feature_flags.update(["WEBSOCKETS"])

_lock = threading.Lock()
_names: dict[str, str] = {}
_watchers: set[str] = set()
_client_holder: list[Any] = []


def _management() -> Any:
    with _lock:
        if not _client_holder:
            _client_holder.append(
                botocore.session.get_session().create_client(
                    "apigatewaymanagementapi",
                    endpoint_url=os.environ["STREAM_MANAGEMENT_URL"],
                    region_name="us-east-1",
                    aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                )
            )
        return _client_holder[0]


def post(connection_id: str, body: dict[str, Any]) -> bool:
    """Send to a connection; False if it is gone."""
    client = _management()
    try:
        client.post_to_connection(ConnectionId=connection_id, Data=json.dumps(body).encode())
    except client.exceptions.GoneException:
        return False
    return True


def _tell_watchers(body: dict[str, Any]) -> None:
    with _lock:
        watchers = sorted(_watchers)
    for watcher in watchers:
        if not post(watcher, body):
            with _lock:
                _watchers.discard(watcher)


@app.on_ws_connect()
def connect(event: WebsocketEvent) -> Response:
    raw = event.to_dict()
    refuse = (raw.get("queryStringParameters") or {}).get("refuse")
    if refuse:
        return Response(body={"message": f"refused with {refuse}"}, status_code=int(refuse))
    if (raw.get("headers") or {}).get("x-api-key") != "good":
        return Response(body={"message": "x-api-key is missing or wrong"}, status_code=401)
    _tell_watchers({"connected": event.connection_id, "event": raw})
    return Response(body="", status_code=200)


@app.on_ws_message()
def message(event: WebsocketEvent) -> None:
    body = json.loads(event.body)
    me = event.connection_id
    action = body.get("action")
    if action == "echo":
        post(me, {"echo": body.get("text"), "connection_id": me, "event": event.to_dict()})
    elif action == "register":
        with _lock:
            _names[body["name"]] = me
    elif action == "lookup":
        with _lock:
            found = _names.get(body["name"])
        post(me, {"name": body["name"], "connection_id": found})
    elif action == "watch":
        with _lock:
            _watchers.add(me)
        post(me, {"watching": True, "connection_id": me})


@app.on_ws_disconnect()
def disconnect(event: WebsocketEvent) -> None:
    with _lock:
        _watchers.discard(event.connection_id)
    context = event.to_dict()["requestContext"]
    _tell_watchers({"disconnected": event.connection_id, "code": context.get("disconnectStatusCode")})
