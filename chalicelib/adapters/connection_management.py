"""The ConnectionPusher on API Gateway's management API (`apigatewaymanagementapi`): POST /@connections/{id}
sends one message, DELETE /@connections/{id} closes the connection. Locally the stream server serves the same
API (devstack/stream_server), so the same client talks to both, only the endpoint_url differs.

A plain botocore client, not boto3 and not chalice's `app.websocket_api` (which imports boto3): no function
imports boto3 (tests/unit/test_import_hygiene.py). Made on the first call, so building the pusher does no I/O.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.streaming import ConnectionGone, StreamUnavailable

# A push is one small message to a nearby endpoint: a second to connect and three to answer are plenty, and the
# publisher waits for a slow connection at most this long. One attempt: a client that missed a push replays it
# from its cursor, and a retried POST could deliver the message twice for no gain.
CONNECT_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 3.0
PUSH_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT_S,
    read_timeout=READ_TIMEOUT_S,
    retries={"mode": "standard", "total_max_attempts": 1},
)

GONE_CODES = frozenset({"GoneException", "410"})


def management_api_client(
    endpoint_url: str, config: Config = PUSH_CONFIG, session: botocore.session.Session | None = None
) -> Any:
    """A botocore `apigatewaymanagementapi` client for this endpoint (botocore's own session unless given)."""
    session = session or botocore.session.Session()
    return session.create_client("apigatewaymanagementapi", endpoint_url=endpoint_url, config=config)


class ManagementApiPusher:
    """ConnectionPusher through a botocore `apigatewaymanagementapi` client with this endpoint_url."""

    def __init__(self, endpoint_url: str, client: Any = None, client_config: Config | None = None) -> None:
        self._endpoint_url = endpoint_url
        self._client = client
        # Ours (timeouts, one attempt) over the caller's (region, credentials' settings).
        self._client_config = client_config.merge(PUSH_CONFIG) if client_config is not None else PUSH_CONFIG
        # The publisher pushes from several threads: one client serves them all (botocore clients are
        # thread-safe once made; making one is not).
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = management_api_client(self._endpoint_url, self._client_config)
            return self._client

    def send(self, connection_id: str, message: Mapping[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        try:
            self.client.post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as exc:
            if _is_gone(exc):
                raise ConnectionGone(connection_id) from exc
            raise StreamUnavailable(f"could not send to connection {connection_id}: {_error_code(exc)}") from exc
        except BotoCoreError as exc:
            raise StreamUnavailable(f"could not send to connection {connection_id}: {type(exc).__name__}") from exc

    def close(self, connection_id: str) -> None:
        try:
            self.client.delete_connection(ConnectionId=connection_id)
        except ClientError as exc:
            if _is_gone(exc):
                return  # closed already: what we wanted
            raise StreamUnavailable(f"could not close connection {connection_id}: {_error_code(exc)}") from exc
        except BotoCoreError as exc:
            raise StreamUnavailable(f"could not close connection {connection_id}: {type(exc).__name__}") from exc


def _is_gone(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 410 or _error_code(exc) in GONE_CODES


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "ClientError")
