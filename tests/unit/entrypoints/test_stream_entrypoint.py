"""The WebSocket handlers on API Gateway's events (chalice's WebsocketEvent) with fakes: the handshake's answer for
each way of authenticating, {"error": ...} for every message the client gets wrong (never an exception), the
listen, the disconnect and the scheduled close of revoked keys' connections."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from chalice.app import WebsocketEvent
from chalice.local import LambdaContext

from chalicelib.adapters.streaming import NewLogEntry, event_id_of
from chalicelib.domain.accounts import KeyScope, issue_key
from chalicelib.entrypoints import stream as handlers
from chalicelib.service import stream
from tests.unit.fakes import Fakes
from tests.unit.fakes_streaming import TroubledConnectionPusher
from tests.unit.helpers import T0, Clock

pytestmark = pytest.mark.unit

LISTENING = {"stream": "orders", "listening": True}


def websocket_event(
    connection_id: str = "c-1",
    *,
    route: str = "$connect",
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: str | None = None,
    context: LambdaContext | None = None,
) -> WebsocketEvent:
    event: dict[str, Any] = {
        "requestContext": {
            "routeKey": route,
            "connectionId": connection_id,
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "stage": "api",
            "apiId": "abc123",
        },
        "headers": headers,
        "queryStringParameters": query,
        "isBase64Encoded": False,
    }
    if body is not None:
        event["body"] = body
    return WebsocketEvent(event, context)


def world() -> tuple[Fakes, Clock, str]:
    clock = Clock()
    fakes = Fakes(clock=clock)
    issued = issue_key("acme", T0, scope=KeyScope.READ)
    fakes.api_keys.add(issued.key)
    return fakes, clock, issued.plaintext


def body_of(response: Any) -> dict[str, Any]:
    answer = response.to_dict()
    body = answer["body"]
    decoded: dict[str, Any] = json.loads(body) if isinstance(body, str) else body
    return decoded


# --- $connect --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda key: {"Authorization": f"Bearer {key}"}, id="bearer"),
        pytest.param(lambda key: {"authorization": f"bearer {key}"}, id="bearer-lowercase"),
        pytest.param(lambda key: {"x-api-key": key}, id="x-api-key"),
        pytest.param(lambda key: {"X-Api-Key": key, "Authorization": f"Bearer {key}"}, id="both-same"),
    ],
)
def test_a_valid_key_in_either_header_opens_the_connection(headers: Any) -> None:
    fakes, _, key = world()
    response = handlers.on_connect(websocket_event(headers=headers(key)), fakes.dependencies())
    assert response.status_code == 200
    connection = fakes.connections.get("c-1")
    assert connection is not None and connection.account_id == "acme"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (None, handlers.MISSING_CREDENTIALS_MESSAGE),
        ({"x-api-key": "   "}, handlers.MISSING_CREDENTIALS_MESSAGE),
        ({"x-api-key": "garbage"}, handlers.INVALID_CREDENTIALS_MESSAGE),
        ({"x-api-key": issue_key("acme", T0).plaintext}, handlers.INVALID_CREDENTIALS_MESSAGE),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, handlers.INVALID_CREDENTIALS_MESSAGE),
    ],
)
def test_a_missing_or_unknown_key_refuses_the_handshake_with_401(headers: dict[str, str] | None, message: str) -> None:
    fakes, _, _ = world()
    response = handlers.on_connect(websocket_event(headers=headers), fakes.dependencies())
    assert (response.status_code, body_of(response)) == (401, {"message": message})
    assert fakes.connections.connections == {}


def test_a_revoked_or_expired_key_refuses_the_handshake() -> None:
    fakes, clock, key = world()
    expiring = issue_key("acme", T0, expires_in=timedelta(minutes=1))
    fakes.api_keys.add(expiring.key)
    fakes.api_keys.revoke(next(iter(fakes.api_keys.keys)), T0)
    clock.now = T0 + timedelta(minutes=2)
    for plaintext in (key, expiring.plaintext):
        response = handlers.on_connect(websocket_event(headers={"x-api-key": plaintext}), fakes.dependencies())
        assert response.status_code == 401
        assert body_of(response) == {"message": handlers.INVALID_CREDENTIALS_MESSAGE}
    assert fakes.connections.connections == {}


def test_a_token_opens_one_connection_only_and_not_once_expired() -> None:
    fakes, clock, _ = world()
    deps = fakes.dependencies()
    key_id = next(iter(fakes.api_keys.keys))
    token, _ = stream.issue_token("acme", key_id, deps)
    assert handlers.on_connect(websocket_event("c-1", query={"token": token}), deps).status_code == 200
    reused = handlers.on_connect(websocket_event("c-2", query={"token": token}), deps)
    assert (reused.status_code, body_of(reused)) == (401, {"message": handlers.INVALID_CREDENTIALS_MESSAGE})
    expired, _ = stream.issue_token("acme", key_id, deps)
    clock.now = T0 + deps.stream.token_ttl
    assert handlers.on_connect(websocket_event("c-3", query={"token": expired}), deps).status_code == 401
    assert set(fakes.connections.connections) == {"c-1"}


def test_keys_that_cannot_be_read_refuse_the_handshake_as_unavailable_not_unauthorized() -> None:
    fakes, _, key = world()
    fakes.api_keys.down = True
    response = handlers.on_connect(websocket_event(headers={"x-api-key": key}), fakes.dependencies())
    assert response.status_code == 503
    assert "message" in body_of(response)


# --- $default --------------------------------------------------------------------------------------------------


def connected(fakes: Fakes, key: str, connection_id: str = "c-1") -> None:
    response = handlers.on_connect(websocket_event(connection_id, headers={"x-api-key": key}), fakes.dependencies())
    assert response.status_code == 200


def message(body: str | None, connection_id: str = "c-1") -> WebsocketEvent:
    return websocket_event(connection_id, route="$default", body=body)


def log_events(fakes: Fakes, count: int) -> None:
    fakes.event_log.append(
        "acme", [NewLogEntry(f"o-1#{n}#0", "o-1", "placed", {"type": "placed"}) for n in range(1, count + 1)]
    )


def test_listen_with_after_replays_then_says_listening() -> None:
    fakes, _, key = world()
    connected(fakes, key)
    log_events(fakes, 3)
    handlers.on_message(message(json.dumps({"action": "listen", "after": event_id_of(1)})), fakes.dependencies())
    assert fakes.pusher.messages_to("c-1") == [
        {"stream": "orders", "event": {"id": event_id_of(2), "type": "placed"}},
        {"stream": "orders", "event": {"id": event_id_of(3), "type": "placed"}},
        LISTENING,
    ]


def test_listen_without_after_only_says_listening() -> None:
    fakes, _, key = world()
    connected(fakes, key)
    log_events(fakes, 3)
    handlers.on_message(message('{"action": "listen"}'), fakes.dependencies())
    handlers.on_message(message('{"action": "listen", "after": null}', "c-1"), fakes.dependencies())
    assert fakes.pusher.messages_to("c-1") == [LISTENING, LISTENING]


@pytest.mark.parametrize(
    ("body", "error_mentions"),
    [
        ("not json", "JSON object"),
        (None, "JSON object"),
        ("[1, 2]", "JSON object"),
        ('"listen"', "JSON object"),
        ("{}", "Unknown action null"),
        ('{"action": "subscribe"}', 'Unknown action "subscribe"'),
        ('{"action": 7}', "Unknown action 7"),
        ('{"action": "listen", "after": "12"}', "after"),
        ('{"action": "listen", "after": 12}', "after"),
        ('{"action": "listen", "after": "99999999999999999999"}', "not an event of this account"),
    ],
)
def test_a_message_the_client_got_wrong_gets_an_error_and_the_connection_stays(
    body: str | None, error_mentions: str
) -> None:
    fakes, _, key = world()
    connected(fakes, key)
    log_events(fakes, 2)
    handlers.on_message(message(body), fakes.dependencies())
    messages = fakes.pusher.messages_to("c-1")
    assert len(messages) == 1 and set(messages[0]) == {"error"}, messages
    assert error_mentions in messages[0]["error"]
    connection = fakes.connections.get("c-1")
    assert connection is not None and not connection.listening
    # Still usable: a correct listen afterwards works.
    handlers.on_message(message('{"action": "listen"}'), fakes.dependencies())
    assert fakes.pusher.messages_to("c-1")[-1] == LISTENING


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("[" * 200_000 + "]" * 200_000, id="nested-deeper-than-python-recurses"),
        pytest.param('{"a": ' * 200_000 + "1" + "}" * 200_000, id="nested-objects"),
        pytest.param(None, id="no-body-at-all"),
    ],
)
def test_a_body_json_cannot_decode_gets_an_error_not_an_exception(body: str | None) -> None:
    fakes, _, key = world()
    connected(fakes, key)
    event = message("placeholder")
    event.body = body  # type: ignore[assignment]  # chalice declares str; a caller may hand over None
    handlers.on_message(event, fakes.dependencies())
    assert fakes.pusher.messages_to("c-1") == [{"error": handlers.NOT_JSON_MESSAGE}]


def test_a_listen_stops_replaying_when_its_invocation_is_about_to_time_out() -> None:
    fakes, _, key = world()
    connected(fakes, key)
    log_events(fakes, 3)
    # An invocation with 5 s left, under the replay's margin: nothing is replayed, the client is told where to
    # listen again from.
    nearly_over = LambdaContext("websocket_message", 128, max_runtime_ms=5_000)
    event = websocket_event(
        route="$default", body=json.dumps({"action": "listen", "after": event_id_of(1)}), context=nearly_over
    )
    handlers.on_message(event, fakes.dependencies())
    cursor = event_id_of(1)
    expected = f"too far behind: replay stopped after {cursor}; listen again with after={cursor} (or page GET /events)"
    assert fakes.pusher.messages_to("c-1") == [{"error": expected}]
    connection = fakes.connections.get("c-1")
    assert connection is not None and not connection.listening
    # With time enough, the same listen replays.
    roomy = LambdaContext("websocket_message", 128, max_runtime_ms=60_000)
    event = websocket_event(
        route="$default", body=json.dumps({"action": "listen", "after": event_id_of(1)}), context=roomy
    )
    handlers.on_message(event, fakes.dependencies())
    assert fakes.pusher.messages_to("c-1")[-1] == LISTENING


def test_an_error_for_a_connection_that_is_gone_forgets_it_without_raising() -> None:
    fakes, _, key = world()
    connected(fakes, key)
    fakes.pusher.gone.add("c-1")
    handlers.on_message(message("nonsense"), fakes.dependencies())
    assert fakes.connections.get("c-1") is None


def test_a_listen_the_management_api_fails_does_not_raise() -> None:
    fakes, _, key = world()
    connected(fakes, key)
    log_events(fakes, 2)
    pusher = TroubledConnectionPusher(wait=lambda _: None)
    pusher.unavailable.add("c-1")
    fakes.pusher = pusher
    # The replay's first push fails, and so does the error sent about it: logged, never raised.
    handlers.on_message(message(json.dumps({"action": "listen", "after": event_id_of(0)})), fakes.dependencies())
    connection = fakes.connections.get("c-1")
    assert connection is not None and not connection.listening
    assert pusher.sent == []


# --- $disconnect and the sweep ---------------------------------------------------------------------------------


def test_disconnect_forgets_the_connection() -> None:
    fakes, _, key = world()
    connected(fakes, key)
    handlers.on_disconnect(websocket_event(route="$disconnect"), fakes.dependencies())
    assert fakes.connections.get("c-1") is None


def test_close_revoked_closes_the_revoked_keys_connections_only() -> None:
    fakes, _, key = world()
    other = issue_key("acme", T0)
    fakes.api_keys.add(other.key)
    connected(fakes, key, "revoked-1")
    connected(fakes, key, "revoked-2")
    connected(fakes, other.plaintext, "kept")
    fakes.api_keys.revoke(next(iter(fakes.api_keys.keys)), T0)
    event = {"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}
    closed = handlers.close_revoked(event, LambdaContext("close", memory_size=128), dependencies=fakes.dependencies())
    assert closed == 2
    assert sorted(fakes.pusher.closed) == ["revoked-1", "revoked-2"]
    assert set(fakes.connections.connections) == {"kept"}
