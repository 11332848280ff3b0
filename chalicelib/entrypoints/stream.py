"""The WebSocket order stream's handlers ($connect, $default, $disconnect) and the sweep of revoked keys' connections.

Thin: they read API Gateway's WebSocket events (chalice's WebsocketEvent) and hand over to service/stream.py.
A refused connect is a 401 {"message": ...}, which refuses the handshake. A message is never answered by an
exception: what the client got wrong goes back to it as {"error": ...} through the management API, and the
connection stays open.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from chalice.app import Response, WebsocketEvent

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.adapters.streaming import ConnectionGone, StreamUnavailable
from chalicelib.domain.accounts import ApiKeyInvalid, ApiKeyMissing
from chalicelib.entrypoints.auth import UNAVAILABLE_MESSAGE, api_key_from_headers
from chalicelib.observability import count, lambda_handler, logger
from chalicelib.service import stream
from chalicelib.service.dependencies import Dependencies

TOKEN_PARAMETER = "token"  # noqa: S105 (a query parameter name)
LISTEN_ACTION = "listen"

MISSING_CREDENTIALS_MESSAGE = (
    "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>', or '?token=' from POST /stream/tokens"
)
# One message for every reason, as the REST authorizer: callers are not told which.
INVALID_CREDENTIALS_MESSAGE = "Invalid or revoked API key, or unknown, used or expired stream token"
STREAM_UNAVAILABLE_MESSAGE = "The stream is temporarily unavailable: send the listen again"
NOT_JSON_MESSAGE = 'A message is a JSON object such as {"action": "listen", "after": "<event id>"}'
UNKNOWN_ACTION_MESSAGE = "Unknown action {action}: the only action is 'listen'"


def on_connect(event: WebsocketEvent, dependencies: Dependencies) -> Response:
    """$connect: 200 records the connection; 401 (no or bad credentials) or 503 refuses the handshake."""
    request = event.to_dict()
    query: Mapping[str, str] = request.get("queryStringParameters") or {}
    try:
        api_key = api_key_from_headers(request.get("headers") or {})
        stream.connect(
            event.connection_id, api_key=api_key, token=query.get(TOKEN_PARAMETER), dependencies=dependencies
        )
    except ApiKeyMissing:
        logger.info("stream connect without credentials refused")
        return _refusal(401, MISSING_CREDENTIALS_MESSAGE)
    except ApiKeyInvalid as exc:
        logger.info("stream connect refused", extra={"reason": str(exc)})
        return _refusal(401, INVALID_CREDENTIALS_MESSAGE)
    except StorageUnavailable:
        logger.exception("stream connect: keys or connections unavailable")
        return _refusal(503, UNAVAILABLE_MESSAGE)
    return Response(body="", status_code=200)


def on_message(event: WebsocketEvent, dependencies: Dependencies) -> None:
    """$default: {"action": "listen", "after": <event id, optional>}; anything else gets {"error": ...} back."""
    connection_id = event.connection_id
    try:
        message = json.loads(event.body)
    except (ValueError, TypeError, RecursionError):  # not JSON; no body at all; nested deeper than Python recurses
        message = None
    if not isinstance(message, dict):
        _answer_error(connection_id, NOT_JSON_MESSAGE, dependencies)
        return
    action = message.get("action")
    if action != LISTEN_ACTION:
        _answer_error(connection_id, UNKNOWN_ACTION_MESSAGE.format(action=json.dumps(action)), dependencies)
        return
    try:
        stream.listen(connection_id, message.get("after"), dependencies, time_left=_time_left(event))
    except stream.ListenRefused as exc:
        _answer_error(connection_id, str(exc), dependencies)
    except (StorageUnavailable, StreamUnavailable):
        logger.warning("stream listen failed", extra={"connection_id": connection_id}, exc_info=True)
        _answer_error(connection_id, STREAM_UNAVAILABLE_MESSAGE, dependencies)


def on_disconnect(event: WebsocketEvent, dependencies: Dependencies) -> None:
    """$disconnect: forget the connection (if this fails, its item expires with API Gateway's 2 h limit)."""
    try:
        stream.disconnect(event.connection_id, dependencies)
    except StorageUnavailable:
        logger.warning("stream connection not forgotten", extra={"connection_id": event.connection_id}, exc_info=True)


@lambda_handler
def close_revoked(event: dict[str, Any], context: Any, *, dependencies: Dependencies) -> int:
    """Scheduled every minute: close the connections of revoked, expired or deleted keys."""
    closed = stream.close_revoked_connections(dependencies)
    count("StreamConnectionsClosed", closed)
    return closed


def _time_left(event: WebsocketEvent) -> Callable[[], float] | None:
    """Seconds left of this invocation (Lambda's context), for a listen to stop replaying in time; None without one."""
    remaining_ms = getattr(event.context, "get_remaining_time_in_millis", None)
    if remaining_ms is None:
        return None
    return lambda: float(remaining_ms()) / 1000


def _refusal(status_code: int, message: str) -> Response:
    return Response(body={"message": message}, status_code=status_code, headers={"Content-Type": "application/json"})


def _answer_error(connection_id: str, error: str, dependencies: Dependencies) -> None:
    try:
        dependencies.stream.pusher.send(connection_id, {"error": error})
    except ConnectionGone:
        stream.forget(connection_id, dependencies)
    except StreamUnavailable:
        logger.warning("stream error not delivered", extra={"connection_id": connection_id}, exc_info=True)
