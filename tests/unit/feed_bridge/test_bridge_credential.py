"""The bridge proves itself to the venue: the credential on the feed's handshake, read again once after a 401,
and a secret that cannot be read keeps the feed unconnected (never connected without it)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from http import HTTPStatus

import pytest
from pydantic import WebsocketUrl
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from feed_bridge.aws import CredentialUnavailable, SecretCredential
from feed_bridge.bridge import FeedBridge
from feed_bridge.records import Record
from feed_bridge.settings import BridgeSettings
from tests.unit.fakes_aws import FakeSecretsManager

pytestmark = pytest.mark.unit

SECRET = "brokerage-test-exchange-credential"
DEADLINE_S = 10.0


class ListSink:
    def __init__(self) -> None:
        self.stored: list[Record] = []

    def put_records(self, records: Sequence[Record]) -> Sequence[str | None]:
        self.stored.extend(records)
        return [None] * len(records)


class MemoryCheckpoints:
    def __init__(self) -> None:
        self.seq = 0

    def load(self) -> int:
        return self.seq

    def save(self, seq: int) -> int:
        self.seq = max(self.seq, seq)
        return self.seq


class Venue:
    """A feed that demands `Bearer <accepted>` on the handshake and then sends one report; records every attempt."""

    def __init__(self, accepted: str) -> None:
        self.accepted = accepted
        self.handshakes: list[str | None] = []

    def check(self, connection: ServerConnection, request: Request) -> Response | None:
        authorization = request.headers.get("Authorization")
        self.handshakes.append(authorization)
        if authorization != f"Bearer {self.accepted}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong credential\n")
        return None

    async def handle(self, connection: ServerConnection) -> None:
        await connection.send(json.dumps({"seq": 1, "client_order_id": "o-1", "exec_type": "new"}))
        await connection.wait_closed()


def settings(port: int) -> BridgeSettings:
    return BridgeSettings(
        exchange_feed_url=WebsocketUrl(f"ws://127.0.0.1:{port}/feed"),
        executions_stream_name="stream",
        feed_checkpoints_table_name="checkpoints",
        exchange_credential_secret_name=SECRET,
        feed_linger_s=0,
        feed_reconnect_min_s=0.01,
        feed_reconnect_max_s=0.05,
        feed_stats_interval_s=60,
        feed_shutdown_grace_s=1,
    )


async def bridge_until(
    venue: Venue, secrets: FakeSecretsManager, done: Callable[[ListSink, Venue], object]
) -> ListSink:
    """Run a bridge against the venue until done(sink, venue) holds (or the deadline); the sink it filled."""
    sink = ListSink()
    async with serve(venue.handle, "127.0.0.1", 0, process_request=venue.check) as server:
        port = server.sockets[0].getsockname()[1]
        credential = SecretCredential(SECRET, client=secrets)
        bridge = FeedBridge(settings(port), sink, MemoryCheckpoints(), credential=credential)
        stop = asyncio.Event()
        running = asyncio.create_task(bridge.run(stop))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while not done(sink, venue) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(running, DEADLINE_S)
    return sink


def test_the_handshake_carries_the_credential_and_the_feed_flows() -> None:
    venue = Venue(accepted="s3cret")
    secrets = FakeSecretsManager({SECRET: "s3cret"})

    sink = asyncio.run(bridge_until(venue, secrets, lambda sink, _: sink.stored))

    assert [record.seq for record in sink.stored] == [1]
    assert venue.handshakes == ["Bearer s3cret"]


def test_a_refused_handshake_reads_the_secret_again_and_reconnects_with_the_new_one() -> None:
    venue = Venue(accepted="after-rotation")

    class RotatedAfterFirstRead(FakeSecretsManager):
        def get_secret_value(self, **request: str) -> dict[str, str]:
            answer = super().get_secret_value(**request)
            self.secrets[SECRET] = "after-rotation"  # the venue already has the new one
            return answer

    rotating = RotatedAfterFirstRead({SECRET: "before-rotation"})
    sink = asyncio.run(bridge_until(venue, rotating, lambda sink, _: sink.stored))

    assert [record.seq for record in sink.stored] == [1]
    assert venue.handshakes == ["Bearer before-rotation", "Bearer after-rotation"]


def test_a_credential_still_refused_is_an_error_and_is_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    venue = Venue(accepted="the-venues-own")
    secrets = FakeSecretsManager({SECRET: "ours-is-wrong"})

    with caplog.at_level(logging.INFO, logger="feed_bridge"):
        sink = asyncio.run(bridge_until(venue, secrets, lambda _, venue: len(venue.handshakes) >= 3))

    assert sink.stored == []
    assert set(venue.handshakes) == {"Bearer ours-is-wrong"}
    assert any(r.levelname == "ERROR" and "401" in r.getMessage() for r in caplog.records)
    assert secrets.reads >= 2  # read again after each refusal, in case it was rotated meanwhile


def test_without_a_readable_secret_the_bridge_never_connects(caplog: pytest.LogCaptureFixture) -> None:
    venue = Venue(accepted="anything")
    secrets = FakeSecretsManager({})

    with caplog.at_level(logging.INFO, logger="feed_bridge"):
        asyncio.run(bridge_until(venue, secrets, lambda *_: secrets.reads >= 2))

    assert venue.handshakes == []  # never a handshake without the credential
    assert any(r.levelname == "ERROR" and "credential" in r.getMessage() for r in caplog.records)


def test_the_secret_is_kept_and_read_again_only_when_refused() -> None:
    secrets = FakeSecretsManager({SECRET: "one"})
    credential = SecretCredential(SECRET, client=secrets)

    assert [credential.current(), credential.current()] == ["one", "one"]
    assert credential.refreshed("stale-from-elsewhere") == "one"  # changed since: no read
    assert secrets.reads == 1
    secrets.secrets[SECRET] = "two"
    assert credential.refreshed("one") == "two"
    assert secrets.reads == 2
    with pytest.raises(CredentialUnavailable, match="ResourceNotFoundException"):
        SecretCredential("missing", client=secrets).current()
