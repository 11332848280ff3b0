"""The WebSocket order stream: who may connect, what a "listen" replays, and how logged events reach listeners.

Protocol (docs/architecture.md): a connection authenticates at connect (an API key, or a single-use token from
POST /stream/tokens); the client then sends {"action": "listen", "after": <event id>} and gets every event of
its account after that cursor, then {"stream": "orders", "listening": true}, then live events. Delivery is at
least once, never a gap: a listen replays up to the head H it read, marks the connection listening above H
(a strongly consistent mark: the publisher of any event logged after it sees it), then catches up once on
whatever was logged meanwhile; the publisher sends each new event to every connection already listening below
it. A connection that may have missed a live event (a push failed, or was not made in time) is closed, so that
its client reconnects and replays from its cursor rather than silently lacking it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.adapters.streaming import (
    ConnectionGone,
    LoggedEvent,
    StreamConnection,
    StreamTokenGrant,
    StreamUnavailable,
    event_id_of,
    sequence_of,
)
from chalicelib.domain.accounts import ApiKey, ApiKeyInvalid, ApiKeyMissing
from chalicelib.observability import LoggingThreadPool, logger
from chalicelib.service import accounts
from chalicelib.service.dependencies import Dependencies

STREAM_NAME = "orders"
# API Gateway closes a WebSocket connection after 2 h: its item goes then even if $disconnect never comes.
CONNECTION_LIFETIME = timedelta(hours=2)
# Events read per page while replaying a listen (one Query each).
REPLAY_PAGE_SIZE = 100
# A listen sends at most this many events (one post each, one after the other)...
MAX_REPLAY_EVENTS = 1_000
# ...and stops while this much of its function's time is left (websocket_message: 60 s): a client further
# behind is told where the replay stopped and listens again from there (or pages GET /events).
REPLAY_TIME_MARGIN_S = 10.0
# How long a publish waits for the pushes of one batch: a slow connection costs the others at most this.
# Over one push's worst case (1 s connect + 3 s read, connection_management.py) so that a healthy push still
# makes it; under the stream function's timeout.
PUBLISH_TIME_BOUND_S = 5.0
# Pushes in flight at once per publish: one thread per connection to push to, up to this many, so that a
# healthy connection is not queued behind slow ones (and closed as late). Pushes wait on the network only.
PUBLISH_MAX_THREADS = 64
# How long a publish may spend closing the connections whose deliveries did not finish in time.
LATE_CLOSE_TIME_BOUND_S = 3.0


class ListenersUnreadable(Exception):
    """publish could not read who listens: nothing was pushed; publish the events again later."""


class ListenRefused(Exception):
    """A listen the client got wrong (bad or unknown cursor): its text goes back as {"error": ...}."""


def event_message(event: LoggedEvent) -> dict[str, Any]:
    return {"stream": STREAM_NAME, "event": event.to_json()}


def replay_stopped_message(last_sent: int) -> dict[str, Any]:
    cursor = event_id_of(last_sent)
    return {
        "error": f"too far behind: replay stopped after {cursor}; listen again with after={cursor} "
        "(or page GET /events)"
    }


LISTENING_MESSAGE: Mapping[str, Any] = {"stream": STREAM_NAME, "listening": True}


# --- connect / disconnect ------------------------------------------------------------------------------------


def connect(
    connection_id: str, *, api_key: str | None, token: str | None, dependencies: Dependencies
) -> StreamConnection:
    """Authenticate a new connection (the API key, else the token) and record it.

    A key of either scope may connect (the stream only reads). Raises ApiKeyMissing (neither given),
    ApiKeyInvalid (unknown, wrong, revoked or expired key; unknown, used or expired token, or one whose key is
    no longer valid) or StorageUnavailable.
    """
    if api_key:
        # Exactly the REST authorizer's check (and its once-a-minute record of the key's use).
        authenticated = accounts.authenticate_key(api_key, dependencies.api_keys, dependencies.clock)
        account_id, key_id = authenticated.account_id, authenticated.key_id
    elif token:
        grant = dependencies.stream.tokens.redeem(token, dependencies.clock())
        if grant is None:
            raise ApiKeyInvalid("unknown, used or expired stream token")
        account_id, key_id = _grant_still_valid(grant, dependencies), grant.key_id
    else:
        raise ApiKeyMissing("no API key and no stream token")
    now = dependencies.clock()
    connection = StreamConnection(connection_id=connection_id, account_id=account_id, key_id=key_id, connected_at=now)
    dependencies.stream.connections.add(connection, expires_at=now + CONNECTION_LIFETIME)
    logger.info("stream connection opened", extra={"connection_id": connection_id, "key_id": key_id})
    return connection


def _grant_still_valid(grant: StreamTokenGrant, dependencies: Dependencies) -> str:
    # The key may have been revoked (or have expired) since it asked for the token.
    key = dependencies.api_keys.get(grant.key_id)
    if not _key_valid(key, grant.account_id, dependencies.clock()):
        raise ApiKeyInvalid("the stream token's key is revoked, expired or gone")
    return grant.account_id


def _key_valid(key: ApiKey | None, account_id: str, now: datetime) -> bool:
    return key is not None and key.account_id == account_id and not key.is_revoked and not key.is_expired(now)


def disconnect(connection_id: str, dependencies: Dependencies) -> None:
    """Forget a closed connection (its $disconnect; also fine if it is unknown)."""
    dependencies.stream.connections.remove(connection_id)


def issue_token(account_id: str, key_id: str, dependencies: Dependencies) -> tuple[str, datetime]:
    """A single-use connect token for this key, and when it expires (POST /stream/tokens)."""
    expires_at = dependencies.clock() + dependencies.stream.token_ttl
    token = dependencies.stream.tokens.issue(StreamTokenGrant(key_id=key_id, account_id=account_id), expires_at)
    return token, expires_at


# --- listen ----------------------------------------------------------------------------------------------------


def parse_cursor(after: object, head: int) -> int:
    """The sequence an `after` names; ListenRefused unless it is an event id at or below the head."""
    if not isinstance(after, str):
        raise ListenRefused("after must be an event id (a string of 20 digits)")
    sequence = sequence_of(after)
    if sequence is None:
        raise ListenRefused(f"after {after!r} is not an event id (20 digits)")
    if sequence > head:
        raise ListenRefused(f"after {after!r} is not an event of this account")
    return sequence


def listen(
    connection_id: str, after: object, dependencies: Dependencies, *, time_left: Callable[[], float] | None = None
) -> bool:
    """Replay the events after `after`, mark the connection listening, catch up once, then say "listening".

    `after` None means no replay: events from now on. A replay stops after MAX_REPLAY_EVENTS, or once
    time_left() (seconds left of the invocation) falls under REPLAY_TIME_MARGIN_S: the client is then told to
    listen again from the last event sent, and does not listen yet. A connection whose key was revoked or
    expired since it connected is closed at once. Returns False if the connection is gone (or was never
    recorded, or was closed here). Raises ListenRefused (bad or unknown cursor: nothing sent yet),
    StorageUnavailable or StreamUnavailable.
    """
    stream = dependencies.stream
    connection = stream.connections.get(connection_id)
    if connection is None:
        return False
    if not _key_valid(dependencies.api_keys.get(connection.key_id), connection.account_id, dependencies.clock()):
        # The sweep would close it within a minute; a listen does not replay to it meanwhile.
        logger.info("stream listen of a revoked or expired key: closed", extra={"connection_id": connection_id})
        stream.pusher.close(connection_id)
        stream.connections.remove(connection_id)
        return False
    account_id = connection.account_id
    head = stream.event_log.head(account_id)
    start = head if after is None else parse_cursor(after, head)
    budget = _ReplayBudget(MAX_REPLAY_EVENTS, time_left)
    try:
        sent_through, complete = _send_events(connection_id, account_id, start, head, dependencies, budget)
        if not complete:
            stream.pusher.send(connection_id, replay_stopped_message(sent_through))
            return True
        # The mark is strongly consistent (listener items, stream_listeners_table.py): an event logged after it
        # is published to this connection; one logged before it is in the catch-up below. So one catch-up
        # leaves no gap. Live events may still arrive before {"listening": true}, and repeat events of the
        # catch-up (logged between the mark and the catch-up's read): delivery is at least once, and clients
        # dedupe by event id (README).
        if stream.connections.start_listening(connection_id, replayed_through=head) is None:
            return False
        try:
            sent_through, complete = _send_events(connection_id, account_id, sent_through, None, dependencies, budget)
        except (StorageUnavailable, StreamUnavailable):
            # Listening already, with a gap below the live events: closed, so that its client listens again.
            with contextlib.suppress(StreamUnavailable):
                stream.pusher.close(connection_id)
            raise
        if not complete:
            # Listening already, with a gap below the live events: closed, its client listens again from here.
            stream.pusher.send(connection_id, replay_stopped_message(sent_through))
            stream.pusher.close(connection_id)
            return False
        stream.pusher.send(connection_id, LISTENING_MESSAGE)
    except ConnectionGone:
        stream.connections.remove(connection_id)
        return False
    return True


@dataclass
class _ReplayBudget:
    """What one listen may still send: a number of events, and only while its invocation has time left."""

    events_left: int
    time_left: Callable[[], float] | None

    def take_one(self) -> bool:
        if self.events_left <= 0:
            return False
        if self.time_left is not None and self.time_left() < REPLAY_TIME_MARGIN_S:
            return False
        self.events_left -= 1
        return True


def _send_events(
    connection_id: str, account_id: str, after: int, through: int | None, deps: Dependencies, budget: _ReplayBudget
) -> tuple[int, bool]:
    """Send the account's events in (after, through] (through None: up to the last one), in order, as the budget
    allows; the last sent, and whether that was all of them."""
    last = after
    while through is None or last < through:
        page = deps.stream.event_log.page(account_id, after=last, limit=REPLAY_PAGE_SIZE)
        for event in page:
            if through is not None and event.sequence > through:
                return last, True
            if not budget.take_one():
                return last, False
            deps.stream.pusher.send(connection_id, event_message(event))
            last = event.sequence
        if len(page) < REPLAY_PAGE_SIZE:
            break
    return last, True


# --- publish ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Delivery:
    """One connection's share of a publish: its account's events above its replayed_through, in order."""

    connection: StreamConnection
    events: list[LoggedEvent]


def publish(
    events: Sequence[LoggedEvent], dependencies: Dependencies, *, time_bound_s: float = PUBLISH_TIME_BOUND_S
) -> None:
    """Push newly logged events to their accounts' listening connections; raises only ListenersUnreadable.

    Each connection gets its account's events above its replayed_through, in sequence order, one after the
    other; different connections are pushed to in parallel, and publish waits for them at most time_bound_s.
    A gone connection is forgotten. One that missed an event (its push failed, or did not finish within
    time_bound_s) is closed: its client reconnects and replays from its cursor. Nothing of a publish runs on
    after it returns (Lambda freezes the process between invocations).
    """
    try:
        deliveries = _deliveries(events, dependencies)
    except Exception as exc:
        # Nobody was pushed to, and no connection knows it missed an event: the caller retries the
        # batch (logging again is idempotent) rather than leave listening clients silently behind.
        raise ListenersUnreadable("the listening connections could not be read") from exc
    if not deliveries:
        return
    stop = threading.Event()
    pool = LoggingThreadPool(max_workers=min(PUBLISH_MAX_THREADS, len(deliveries)), thread_name_prefix="stream-push")
    futures: dict[Future[None], _Delivery] = {}
    try:
        for delivery in deliveries:
            futures[pool.submit(_deliver, delivery, stop, dependencies)] = delivery
        _, unfinished = wait(futures, timeout=time_bound_s)
    finally:
        # Deliveries not started are cancelled, those in flight stop after their current push (which ends
        # within the pusher's own timeouts): none sends anything more once publish has returned.
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
    late = [futures[future].connection.connection_id for future in unfinished]
    _close_late(late, dependencies, time.monotonic() + LATE_CLOSE_TIME_BOUND_S)


def _deliveries(events: Sequence[LoggedEvent], dependencies: Dependencies) -> list[_Delivery]:
    by_account: dict[str, list[LoggedEvent]] = {}
    for event in events:
        by_account.setdefault(event.account_id, []).append(event)
    deliveries = []
    for account_id, logged in by_account.items():
        # In sequence order, each once: a retried batch may hand events over again or out of order.
        ordered = sorted({event.sequence: event for event in logged}.values(), key=lambda event: event.sequence)
        for connection in dependencies.stream.connections.listening_for(account_id):
            due = [event for event in ordered if event.sequence > connection.replayed_through]
            if due:
                deliveries.append(_Delivery(connection, due))
    return deliveries


def _deliver(delivery: _Delivery, stop: threading.Event, dependencies: Dependencies) -> None:
    """Send one connection its events (in a pool thread) until publish stops waiting; never raises."""
    connection_id = delivery.connection.connection_id
    try:
        for event in delivery.events:
            if stop.is_set():
                return  # too late: publish closes the connection
            dependencies.stream.pusher.send(connection_id, event_message(event))
    except ConnectionGone:
        forget(connection_id, dependencies)
    except Exception:  # StreamUnavailable, or anything a pusher may raise: never the publisher's problem
        logger.warning("stream push failed", extra={"connection_id": connection_id}, exc_info=True)
        _close_lagging(connection_id, "push failed", dependencies)


def _close_late(connection_ids: Sequence[str], dependencies: Dependencies, deadline: float) -> None:
    # From the publishing thread, so that it happens before the invocation ends; bounded, as a management API
    # in trouble could take each close's full timeout.
    for n, connection_id in enumerate(connection_ids):
        if time.monotonic() >= deadline:
            logger.error(
                "stream connections that missed events left open: no time to close them",
                extra={"connection_ids": list(connection_ids[n:])},
            )
            return
        _close_lagging(connection_id, "not pushed in time", dependencies)


def _close_lagging(connection_id: str, reason: str, dependencies: Dependencies) -> None:
    # The client now lacks an event it will not be sent: closed, it reconnects and replays from its cursor
    # (a slow client costs a reconnect, never a gap). Its $disconnect forgets it.
    logger.warning(
        "stream connection closed: it missed events", extra={"connection_id": connection_id, "reason": reason}
    )
    try:
        dependencies.stream.pusher.close(connection_id)
    except Exception:
        logger.warning("stream connection could not be closed", extra={"connection_id": connection_id}, exc_info=True)


def forget(connection_id: str, dependencies: Dependencies) -> None:
    """Forget a connection that is gone; a storage failure only costs a wasted push until it expires."""
    try:
        dependencies.stream.connections.remove(connection_id)
    except Exception:
        logger.warning("gone stream connection not forgotten", extra={"connection_id": connection_id}, exc_info=True)


# --- revoked keys ----------------------------------------------------------------------------------------------


def close_revoked_connections(dependencies: Dependencies) -> int:
    """Close (and forget) every connection whose key is gone, revoked or expired; how many were closed.

    A connection that cannot be closed now stays recorded, and the next run tries again.
    """
    now = dependencies.clock()
    valid: dict[str, bool] = {}
    closed = 0
    for connection in dependencies.stream.connections.all():
        if connection.key_id not in valid:
            key = dependencies.api_keys.get(connection.key_id)
            valid[connection.key_id] = _key_valid(key, connection.account_id, now)
        if valid[connection.key_id]:
            continue
        try:
            dependencies.stream.pusher.close(connection.connection_id)
        except StreamUnavailable:
            logger.warning("revoked key's connection not closed yet", extra={"connection_id": connection.connection_id})
            continue
        dependencies.stream.connections.remove(connection.connection_id)
        closed += 1
    return closed
