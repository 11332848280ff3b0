"""In-memory fakes of the order event log and the stream's connections, tokens and pushes (the stream's ports)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from chalicelib.adapters.repository import (
    StorageUnavailable,
)
from chalicelib.adapters.streaming import (
    START_POSITION,
    ConnectionGone,
    LoggedEvent,
    NewLogEntry,
    StreamConnection,
    StreamTokenGrant,
    StreamUnavailable,
)


class FakeOrderEventLog:
    """The accounts' event logs in memory: sequence numbers per account, each change_key logged once."""

    def __init__(self) -> None:
        self.events: dict[str, list[LoggedEvent]] = {}
        self._by_change_key: dict[tuple[str, str], LoggedEvent] = {}
        self.fail_with: Exception | None = None
        self.down_for: set[str] = set()  # accounts whose appends raise StorageUnavailable
        self.pages_until_down: int | None = None  # pages read before page() raises StorageUnavailable

    def append(self, account_id: str, entries: Sequence[NewLogEntry]) -> list[LoggedEvent]:
        if self.fail_with is not None:
            raise self.fail_with
        if account_id in self.down_for:
            raise StorageUnavailable(f"the log of {account_id} is down")
        logged = []
        for entry in entries:
            known = self._by_change_key.get((account_id, entry.change_key))
            if known is None:
                log = self.events.setdefault(account_id, [])
                known = LoggedEvent(account_id, len(log) + 1, entry.order_id, entry.type, dict(entry.body))
                log.append(known)
                self._by_change_key[(account_id, entry.change_key)] = known
            logged.append(known)
        return logged

    def page(self, account_id: str, after: int, limit: int) -> list[LoggedEvent]:
        if self.pages_until_down is not None:
            if self.pages_until_down <= 0:
                raise StorageUnavailable(f"the log of {account_id} is down")
            self.pages_until_down -= 1
        return [event for event in self.events.get(account_id, []) if event.sequence > after][:limit]

    def head(self, account_id: str) -> int:
        log = self.events.get(account_id, [])
        return log[-1].sequence if log else START_POSITION


class FakeStreamConnections:
    def __init__(self) -> None:
        self.connections: dict[str, StreamConnection] = {}
        self.expiry: dict[str, datetime] = {}

    def add(self, connection: StreamConnection, expires_at: datetime) -> None:
        self.connections[connection.connection_id] = connection
        self.expiry[connection.connection_id] = expires_at

    def get(self, connection_id: str) -> StreamConnection | None:
        return self.connections.get(connection_id)

    def remove(self, connection_id: str) -> None:
        self.connections.pop(connection_id, None)

    def start_listening(self, connection_id: str, replayed_through: int) -> StreamConnection | None:
        connection = self.connections.get(connection_id)
        if connection is None:
            return None
        listening = dataclasses.replace(connection, listening=True, replayed_through=replayed_through)
        self.connections[connection_id] = listening
        return listening

    def listening_for(self, account_id: str) -> list[StreamConnection]:
        return [c for c in self.connections.values() if c.account_id == account_id and c.listening]

    def all(self) -> Iterator[StreamConnection]:
        return iter(list(self.connections.values()))


class FakeStreamTokens:
    def __init__(self) -> None:
        self.tokens: dict[str, tuple[StreamTokenGrant, datetime]] = {}

    def issue(self, grant: StreamTokenGrant, expires_at: datetime) -> str:
        token = f"token-{len(self.tokens) + 1}"
        self.tokens[token] = (grant, expires_at)
        return token

    def redeem(self, token: str, now: datetime) -> StreamTokenGrant | None:
        grant, expires_at = self.tokens.pop(token, (None, now))
        return grant if grant is not None and now < expires_at else None


class FakeConnectionPusher:
    """Records what was sent to and which connections were closed; `gone` ones raise ConnectionGone."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.closed: list[str] = []
        self.gone: set[str] = set()

    def send(self, connection_id: str, message: Mapping[str, Any]) -> None:
        if connection_id in self.gone:
            raise ConnectionGone(connection_id)
        self.sent.append((connection_id, dict(message)))

    def close(self, connection_id: str) -> None:
        self.closed.append(connection_id)
        self.gone.add(connection_id)

    def messages_to(self, connection_id: str) -> list[dict[str, Any]]:
        return [message for target, message in self.sent if target == connection_id]


class LogWatchingPusher(FakeConnectionPusher):
    """Notes, at each send, how many events every account's log holds by then."""

    def __init__(self, event_log: FakeOrderEventLog) -> None:
        super().__init__()
        self.event_log = event_log
        self.logged_at_send: list[int] = []

    def send(self, connection_id: str, message: Mapping[str, Any]) -> None:
        self.logged_at_send.append(sum(len(log) for log in self.event_log.events.values()))
        super().send(connection_id, message)


class TroubledConnectionPusher(FakeConnectionPusher):
    """A pusher in trouble on some connections: each send to a `slow` one first waits delay_s (through `wait`,
    e.g. time.sleep); sends to `unavailable` ones and closes of `unclosable` ones raise StreamUnavailable."""

    def __init__(self, wait: Callable[[float], object], delay_s: float = 0.0) -> None:
        super().__init__()
        self.wait, self.delay_s = wait, delay_s
        self.slow: set[str] = set()
        self.unavailable: set[str] = set()
        self.unclosable: set[str] = set()

    def send(self, connection_id: str, message: Mapping[str, Any]) -> None:
        if connection_id in self.slow:
            self.wait(self.delay_s)
        if connection_id in self.unavailable:
            raise StreamUnavailable(connection_id)
        super().send(connection_id, message)

    def close(self, connection_id: str) -> None:
        if connection_id in self.unclosable:
            raise StreamUnavailable(connection_id)
        super().close(connection_id)


class UnreadableStreamConnections(FakeStreamConnections):
    """Connections whose listing fails as an unreachable table does (the publisher's read)."""

    def listening_for(self, account_id: str) -> list[StreamConnection]:
        raise StorageUnavailable("down")
