"""The ports of the live order events: the account's event log, the WebSocket connections and their connect tokens,
and the management API that pushes to (and closes) a connection. Implementations: order_events_table.py,
stream_connections_table.py, connection_management.py; the fakes in tests/unit/fakes.py.

An event id is its position in its account's log: a 20-digit, zero-padded sequence number, so ids sort as the
events happened and the id of the last event a client saw is the cursor it resumes from (GET /events?after=,
the stream's {"action": "listen", "after": ...}). Sequence 0 is the position before the first event.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

EVENT_ID_DIGITS = 20
START_POSITION = 0


def event_id_of(sequence: int) -> str:
    """The event id (and cursor) of the event with this sequence number."""
    return f"{sequence:0{EVENT_ID_DIGITS}d}"


def sequence_of(event_id: str) -> int | None:
    """The sequence number an event id or cursor names; None if the text is not one of ours."""
    if len(event_id) != EVENT_ID_DIGITS or not event_id.isascii() or not event_id.isdigit():
        return None
    return int(event_id)


@dataclass(frozen=True)
class NewLogEntry:
    """One order event to log: `body` is its client JSON without the id (type, time, order, execution)."""

    # One per event, the same however often the same order change is seen
    # (f"{order id}#{order version}#{n}"): a stream record processed twice logs its events once.
    change_key: str
    order_id: str
    type: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class LoggedEvent:
    """An event as logged: its account, its place in the account's log and its client JSON."""

    account_id: str
    sequence: int
    order_id: str
    type: str
    body: Mapping[str, Any]

    @property
    def event_id(self) -> str:
        return event_id_of(self.sequence)

    def to_json(self) -> dict[str, Any]:
        """What GET /events and the stream send: {"id", "type", "time", "order", "execution"}."""
        return {"id": self.event_id, **self.body}


class OrderEventLog(Protocol):
    """Each account's order events, numbered 1, 2, 3... in the order they were logged, kept at least 7 days."""

    def append(self, account_id: str, entries: Sequence[NewLogEntry]) -> list[LoggedEvent]:
        """Log the entries, in this order, after the account's last event; each change_key at most once ever.

        Returns every entry as logged, those an earlier call logged already
        included (with the sequence number they got then), in entry order.
        A sequence number becomes visible to page() only together with every
        lower one: a reader never sees a gap that is later filled (no skips).
        Raises StorageUnavailable.
        """

    def page(self, account_id: str, after: int, limit: int) -> list[LoggedEvent]:
        """Up to `limit` events with a sequence number above `after`, oldest first (strongly consistent)."""

    def head(self, account_id: str) -> int:
        """The sequence number of the account's last event; START_POSITION if it has none."""


@dataclass(frozen=True)
class StreamConnection:
    """One open WebSocket connection of the order stream."""

    connection_id: str
    account_id: str
    key_id: str  # the API key it connected with: its revocation closes the connection
    connected_at: datetime
    # Set by the client's "listen": live events go to listening connections only, and only those
    # above replayed_through (the listen's replay sent everything up to it).
    listening: bool = False
    replayed_through: int = START_POSITION


class StreamConnections(Protocol):
    def add(self, connection: StreamConnection, expires_at: datetime) -> None:
        """Record a new connection (forgotten by itself after expires_at: API Gateway's 2 h limit)."""

    def get(self, connection_id: str) -> StreamConnection | None: ...

    def remove(self, connection_id: str) -> None:
        """Forget the connection (no error if it is unknown)."""

    def start_listening(self, connection_id: str, replayed_through: int) -> StreamConnection | None:
        """Mark the connection listening with live events above replayed_through; None if it is gone."""

    def listening_for(self, account_id: str) -> list[StreamConnection]:
        """The account's listening connections, strongly consistent: a start_listening that returned is in it."""

    def all(self) -> Iterator[StreamConnection]:
        """Every connection, for the sweep that closes those of revoked keys."""


@dataclass(frozen=True)
class StreamTokenGrant:
    """What a connect token stands for: the key (and its account) that asked for it."""

    key_id: str
    account_id: str


class StreamTokens(Protocol):
    def issue(self, grant: StreamTokenGrant, expires_at: datetime) -> str:
        """A new random token for the grant, usable once before expires_at (only its hash is stored)."""

    def redeem(self, token: str, now: datetime) -> StreamTokenGrant | None:
        """The token's grant, consuming the token; None if unknown, used already or expired."""


class ConnectionGone(Exception):
    """The connection is closed (API Gateway's 410 Gone): forget it."""


class StreamUnavailable(Exception):
    """The management API could not be reached or failed; the push may be retried."""


class ConnectionPusher(Protocol):
    """API Gateway's management API for the stream's connections (locally: the stream server's)."""

    def send(self, connection_id: str, message: Mapping[str, Any]) -> None:
        """Send one JSON text message. Raises ConnectionGone or StreamUnavailable."""

    def close(self, connection_id: str) -> None:
        """Close the connection (no error if it is gone already). Raises StreamUnavailable."""
