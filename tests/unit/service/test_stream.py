"""The WebSocket stream's use cases with in-memory fakes: who may connect, what a listen replays, what publish
sends to whom, and which connections the sweep of revoked keys closes."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta

import pytest

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.adapters.streaming import NewLogEntry, StreamConnection, event_id_of
from chalicelib.domain.accounts import ApiKeyInvalid, ApiKeyMissing, KeyScope, issue_key
from chalicelib.service import stream
from chalicelib.service.dependencies import Dependencies
from tests.unit.fakes import Fakes
from tests.unit.fakes_streaming import TroubledConnectionPusher, UnreadableStreamConnections
from tests.unit.helpers import T0, Clock

pytestmark = pytest.mark.unit

LISTENING = {"stream": "orders", "listening": True}


def world() -> tuple[Fakes, Clock]:
    clock = Clock()
    return Fakes(clock=clock), clock


def new_key(fakes: Fakes, account_id: str = "acme", scope: KeyScope = KeyScope.TRADE, **kwargs: object) -> str:
    issued = issue_key(account_id, T0, scope=scope, **kwargs)  # type: ignore[arg-type]
    fakes.api_keys.add(issued.key)
    return issued.plaintext


def log_events(fakes: Fakes, account_id: str, count: int, order_id: str = "o-1") -> None:
    start = len(fakes.event_log.events.get(account_id, []))
    entries = [
        NewLogEntry(f"{order_id}#{start + n}#0", order_id, "placed", {"type": "placed", "n": start + n})
        for n in range(1, count + 1)
    ]
    fakes.event_log.append(account_id, entries)


def sent_ids(fakes: Fakes, connection_id: str) -> list[str]:
    return [message["event"]["id"] for message in fakes.pusher.messages_to(connection_id) if "event" in message]


def connected(fakes: Fakes, connection_id: str = "c-1", account_id: str = "acme") -> StreamConnection:
    plaintext = new_key(fakes, account_id)
    return stream.connect(connection_id, api_key=plaintext, token=None, dependencies=fakes.dependencies())


# --- connect ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", list(KeyScope))
def test_a_key_of_either_scope_connects_and_the_connection_expires_with_api_gateways_limit(scope: KeyScope) -> None:
    fakes, _ = world()
    plaintext = new_key(fakes, scope=scope)
    connection = stream.connect("c-1", api_key=plaintext, token=None, dependencies=fakes.dependencies())
    assert (connection.account_id, connection.listening) == ("acme", False)
    assert fakes.connections.get("c-1") == connection
    assert fakes.connections.expiry["c-1"] == T0 + timedelta(hours=2)


def test_missing_unknown_revoked_and_expired_keys_are_refused_and_nothing_is_recorded() -> None:
    fakes, clock = world()
    deps = fakes.dependencies()
    with pytest.raises(ApiKeyMissing):
        stream.connect("c-1", api_key=None, token=None, dependencies=deps)
    with pytest.raises(ApiKeyInvalid):
        stream.connect("c-1", api_key=issue_key("acme", T0).plaintext, token=None, dependencies=deps)
    revoked = new_key(fakes)
    fakes.api_keys.revoke(next(iter(fakes.api_keys.keys)), T0)
    with pytest.raises(ApiKeyInvalid):
        stream.connect("c-1", api_key=revoked, token=None, dependencies=deps)
    expiring = new_key(fakes, expires_in=timedelta(minutes=1))
    clock.now = T0 + timedelta(minutes=1)
    with pytest.raises(ApiKeyInvalid):
        stream.connect("c-1", api_key=expiring, token=None, dependencies=deps)
    assert fakes.connections.connections == {}


def test_a_token_connects_once_for_its_keys_account() -> None:
    fakes, _ = world()
    key = issue_key("acme", T0, scope=KeyScope.READ)
    fakes.api_keys.add(key.key)
    deps = fakes.dependencies()
    token, expires_at = stream.issue_token("acme", key.key.key_id, deps)
    assert expires_at == T0 + timedelta(minutes=5)
    connection = stream.connect("c-1", api_key=None, token=token, dependencies=deps)
    assert (connection.account_id, connection.key_id) == ("acme", key.key.key_id)
    with pytest.raises(ApiKeyInvalid):
        stream.connect("c-2", api_key=None, token=token, dependencies=deps)
    assert set(fakes.connections.connections) == {"c-1"}


def test_an_expired_token_or_one_whose_key_was_revoked_since_is_refused() -> None:
    fakes, clock = world()
    key = issue_key("acme", T0)
    fakes.api_keys.add(key.key)
    deps = fakes.dependencies()
    late, _ = stream.issue_token("acme", key.key.key_id, deps)
    clock.now = T0 + timedelta(minutes=5)
    with pytest.raises(ApiKeyInvalid):
        stream.connect("c-1", api_key=None, token=late, dependencies=deps)
    revoked_since, _ = stream.issue_token("acme", key.key.key_id, deps)
    fakes.api_keys.revoke(key.key.key_id, clock.now)
    with pytest.raises(ApiKeyInvalid):
        stream.connect("c-1", api_key=None, token=revoked_since, dependencies=deps)
    with pytest.raises(ApiKeyInvalid):
        stream.connect("c-1", api_key=None, token="never-issued", dependencies=deps)
    assert fakes.connections.connections == {}


def test_disconnect_forgets_the_connection() -> None:
    fakes, _ = world()
    connected(fakes)
    stream.disconnect("c-1", fakes.dependencies())
    stream.disconnect("unknown", fakes.dependencies())
    assert fakes.connections.get("c-1") is None


# --- listen ----------------------------------------------------------------------------------------------------


def test_listen_without_after_replays_nothing_and_listens_from_the_head() -> None:
    fakes, _ = world()
    connected(fakes)
    log_events(fakes, "acme", 3)
    assert stream.listen("c-1", None, fakes.dependencies()) is True
    assert fakes.pusher.messages_to("c-1") == [LISTENING]
    connection = fakes.connections.get("c-1")
    assert connection is not None
    assert (connection.listening, connection.replayed_through) == (True, 3)


def test_listen_with_after_replays_every_later_event_in_order_across_pages_then_says_listening() -> None:
    fakes, _ = world()
    connected(fakes)
    log_events(fakes, "acme", 2 * stream.REPLAY_PAGE_SIZE + 7)
    log_events(fakes, "other", 5)
    stream.listen("c-1", event_id_of(10), fakes.dependencies())
    messages = fakes.pusher.messages_to("c-1")
    assert messages[-1] == LISTENING
    assert sent_ids(fakes, "c-1") == [event_id_of(n) for n in range(11, 2 * stream.REPLAY_PAGE_SIZE + 8)]
    first = messages[0]
    assert first == {"stream": "orders", "event": {"id": event_id_of(11), "type": "placed", "n": 11}}


def test_listen_from_the_start_position_replays_everything() -> None:
    fakes, _ = world()
    connected(fakes)
    log_events(fakes, "acme", 3)
    stream.listen("c-1", event_id_of(0), fakes.dependencies())
    assert sent_ids(fakes, "c-1") == [event_id_of(n) for n in (1, 2, 3)]


def never_sleeps(seconds: float) -> None:
    raise AssertionError(f"a listen must not wait ({seconds} s): the listening mark is strongly consistent")


def test_events_logged_during_the_replay_are_caught_up_once_without_waiting_then_listening() -> None:
    fakes, _ = world()
    connected(fakes)
    log_events(fakes, "acme", 2)
    logged_meanwhile: list[int] = []

    def log_one_on_the_first_push(_: float) -> None:
        if not logged_meanwhile:
            logged_meanwhile.append(1)
            log_events(fakes, "acme", 1)

    pusher = TroubledConnectionPusher(wait=log_one_on_the_first_push)
    pusher.slow.add("c-1")
    fakes.pusher = pusher
    deps = dataclasses.replace(fakes.dependencies(), sleep=never_sleeps)
    assert stream.listen("c-1", event_id_of(0), deps) is True
    # 1 and 2 replayed (up to the head read before), 3 logged meanwhile: caught up, then "listening".
    assert sent_ids(fakes, "c-1") == [event_id_of(n) for n in (1, 2, 3)]
    assert fakes.pusher.messages_to("c-1")[-1] == LISTENING
    connection = fakes.connections.get("c-1")
    assert connection is not None and connection.replayed_through == 2  # the publisher sends 3 too: at least once


def test_a_replay_stops_after_its_event_limit_and_tells_where_without_listening() -> None:
    fakes, _ = world()
    connected(fakes)
    log_events(fakes, "acme", stream.MAX_REPLAY_EVENTS + 5)
    assert stream.listen("c-1", event_id_of(0), fakes.dependencies()) is True
    assert sent_ids(fakes, "c-1") == [event_id_of(n) for n in range(1, stream.MAX_REPLAY_EVENTS + 1)]
    last = event_id_of(stream.MAX_REPLAY_EVENTS)
    assert fakes.pusher.messages_to("c-1")[-1] == {
        "error": f"too far behind: replay stopped after {last}; listen again with after={last} (or page GET /events)"
    }
    connection = fakes.connections.get("c-1")
    assert connection is not None and not connection.listening
    # The client listens again from there and gets the rest.
    assert stream.listen("c-1", last, fakes.dependencies()) is True
    assert sent_ids(fakes, "c-1")[stream.MAX_REPLAY_EVENTS :] == [
        event_id_of(n) for n in range(stream.MAX_REPLAY_EVENTS + 1, stream.MAX_REPLAY_EVENTS + 6)
    ]
    assert fakes.pusher.messages_to("c-1")[-1] == LISTENING


def test_a_replay_stops_when_the_invocation_runs_out_of_time() -> None:
    fakes, _ = world()
    connected(fakes)
    log_events(fakes, "acme", 10)
    remaining = iter([30.0, 20.0, 12.0, 9.0])  # seconds left at each event: the third is the last one sent
    assert stream.listen("c-1", event_id_of(0), fakes.dependencies(), time_left=lambda: next(remaining)) is True
    assert sent_ids(fakes, "c-1") == [event_id_of(n) for n in (1, 2, 3)]
    assert fakes.pusher.messages_to("c-1")[-1]["error"].startswith(
        f"too far behind: replay stopped after {event_id_of(3)};"
    )
    connection = fakes.connections.get("c-1")
    assert connection is not None and not connection.listening


def test_a_catch_up_cut_short_closes_the_connection_already_listening() -> None:
    fakes, _ = world()
    connected(fakes)
    log_events(fakes, "acme", 2)
    # Orders keep changing: each push of the listen sees one more event logged.
    pusher = TroubledConnectionPusher(wait=lambda _: log_events(fakes, "acme", 1))
    pusher.slow.add("c-1")
    fakes.pusher = pusher
    remaining = iter([30.0, 30.0, 30.0, 5.0])  # replay 1, 2; catch-up 3; then out of time
    assert stream.listen("c-1", event_id_of(0), fakes.dependencies(), time_left=lambda: next(remaining)) is False
    assert sent_ids(fakes, "c-1") == [event_id_of(n) for n in (1, 2, 3)]
    assert fakes.pusher.messages_to("c-1")[-1]["error"].startswith(
        f"too far behind: replay stopped after {event_id_of(3)};"
    )
    assert LISTENING not in fakes.pusher.messages_to("c-1")
    assert pusher.closed == ["c-1"]  # listening above 2 but lacking 4...: its client listens again from 3


def test_a_catch_up_that_fails_closes_the_connection_already_listening() -> None:
    fakes, _ = world()
    connected(fakes)
    log_events(fakes, "acme", 2)
    fakes.event_log.pages_until_down = 1  # the replay's page is read, the catch-up's fails
    with pytest.raises(StorageUnavailable):
        stream.listen("c-1", event_id_of(0), fakes.dependencies())
    assert fakes.pusher.closed == ["c-1"]  # listening above 2, lacking what came meanwhile: its client listens again
    assert LISTENING not in fakes.pusher.messages_to("c-1")


def test_listen_with_a_key_revoked_since_the_connect_closes_the_connection_without_replaying() -> None:
    fakes, clock = world()
    connected(fakes)
    log_events(fakes, "acme", 3)
    fakes.api_keys.revoke(next(iter(fakes.api_keys.keys)), clock.now)
    assert stream.listen("c-1", event_id_of(0), fakes.dependencies()) is False
    assert fakes.pusher.sent == []
    assert fakes.pusher.closed == ["c-1"]
    assert fakes.connections.get("c-1") is None


def test_listen_with_a_key_expired_since_the_connect_closes_the_connection() -> None:
    fakes, clock = world()
    plaintext = new_key(fakes, expires_in=timedelta(minutes=1))
    stream.connect("c-1", api_key=plaintext, token=None, dependencies=fakes.dependencies())
    clock.now = T0 + timedelta(minutes=1)
    assert stream.listen("c-1", None, fakes.dependencies()) is False
    assert (fakes.pusher.sent, fakes.pusher.closed) == ([], ["c-1"])


@pytest.mark.parametrize("after", [event_id_of(4), "12", "x" * 20, "-0000000000000000001", "", 7, ["1"]])
def test_a_bad_or_unknown_cursor_is_refused_and_the_connection_stays_as_it_was(after: object) -> None:
    fakes, _ = world()
    connected(fakes)
    log_events(fakes, "acme", 3)
    with pytest.raises(stream.ListenRefused, match="after"):
        stream.listen("c-1", after, fakes.dependencies())
    connection = fakes.connections.get("c-1")
    assert connection is not None and not connection.listening
    assert fakes.pusher.sent == []


def test_a_cursor_of_another_accounts_log_beyond_this_ones_head_is_unknown() -> None:
    fakes, _ = world()
    connected(fakes, account_id="acme")
    log_events(fakes, "acme", 1)
    log_events(fakes, "other", 9)
    with pytest.raises(stream.ListenRefused, match="not an event of this account"):
        stream.listen("c-1", event_id_of(9), fakes.dependencies())


def test_listen_on_a_connection_that_went_away_forgets_it() -> None:
    fakes, _ = world()
    connected(fakes)
    log_events(fakes, "acme", 2)
    fakes.pusher.gone.add("c-1")
    assert stream.listen("c-1", event_id_of(0), fakes.dependencies()) is False
    assert fakes.connections.get("c-1") is None
    assert stream.listen("never-connected", None, fakes.dependencies()) is False


# --- publish ---------------------------------------------------------------------------------------------------


def listening(fakes: Fakes, connection_id: str, account_id: str, replayed_through: int) -> None:
    fakes.connections.add(StreamConnection(connection_id, account_id, "k", T0), T0 + timedelta(hours=2))
    fakes.connections.start_listening(connection_id, replayed_through)


def test_publish_sends_each_listener_its_accounts_events_above_its_replay_in_order() -> None:
    fakes, _ = world()
    listening(fakes, "early", "acme", 0)
    listening(fakes, "late", "acme", 3)
    listening(fakes, "other-account", "other", 0)
    fakes.connections.add(StreamConnection("not-listening", "acme", "k", T0), T0)
    log_events(fakes, "acme", 5)
    log_events(fakes, "other", 1)
    acme = fakes.event_log.events["acme"]
    # Out of order and with a duplicate, as a retried batch may hand them over.
    stream.publish([acme[4], acme[2], acme[3], acme[2]], fakes.dependencies())
    assert sent_ids(fakes, "early") == [event_id_of(3), event_id_of(4), event_id_of(5)]
    assert sent_ids(fakes, "late") == [event_id_of(4), event_id_of(5)]
    assert fakes.pusher.messages_to("other-account") == []
    assert fakes.pusher.messages_to("not-listening") == []
    assert fakes.pusher.closed == []


def test_publish_keeps_accounts_apart_in_one_batch() -> None:
    fakes, _ = world()
    listening(fakes, "a", "acme", 0)
    listening(fakes, "b", "other", 0)
    log_events(fakes, "acme", 1, order_id="acme-order")
    log_events(fakes, "other", 1, order_id="other-order")
    batch = [fakes.event_log.events["acme"][0], fakes.event_log.events["other"][0]]
    stream.publish(batch, fakes.dependencies())
    assert [m["event"]["n"] for m in fakes.pusher.messages_to("a")] == [1]
    assert fakes.pusher.sent.count(("a", stream.event_message(batch[0]))) == 1
    assert fakes.pusher.sent.count(("b", stream.event_message(batch[1]))) == 1
    assert len(fakes.pusher.sent) == 2


def test_a_gone_connection_is_forgotten_and_the_others_still_get_their_events() -> None:
    fakes, _ = world()
    listening(fakes, "gone", "acme", 0)
    listening(fakes, "here", "acme", 0)
    fakes.pusher.gone.add("gone")
    log_events(fakes, "acme", 2)
    stream.publish(fakes.event_log.events["acme"], fakes.dependencies())
    assert fakes.connections.get("gone") is None
    assert sent_ids(fakes, "here") == [event_id_of(1), event_id_of(2)]


def test_a_slow_connection_does_not_delay_another_beyond_the_bound_and_is_closed() -> None:
    fakes, _ = world()
    release = threading.Event()
    pusher = TroubledConnectionPusher(wait=release.wait, delay_s=10.0)
    pusher.slow.add("slow")
    fakes.pusher = pusher
    listening(fakes, "slow", "acme", 0)
    listening(fakes, "fast", "acme", 0)
    log_events(fakes, "acme", 3)
    started = time.monotonic()
    try:
        stream.publish(fakes.event_log.events["acme"], fakes.dependencies(), time_bound_s=0.3)
        took = time.monotonic() - started
        assert sent_ids(fakes, "fast") == [event_id_of(n) for n in (1, 2, 3)]
        assert took < 1.5, took
        # It missed events it will not get: closed (before publish returns, while its push still hangs), so
        # that its client reconnects and replays from its cursor.
        assert pusher.closed == ["slow"]
    finally:
        release.set()


def test_healthy_connections_queued_behind_many_slow_ones_get_their_events_and_nothing_runs_on() -> None:
    fakes, _ = world()
    release = threading.Event()
    pusher = TroubledConnectionPusher(wait=release.wait, delay_s=10.0)
    fakes.pusher = pusher
    slow = [f"slow-{n}" for n in range(12)]
    pusher.slow.update(slow)
    for connection_id in [*slow, "fast"]:
        listening(fakes, connection_id, "acme", 0)
    log_events(fakes, "acme", 3)
    try:
        stream.publish(fakes.event_log.events["acme"], fakes.dependencies(), time_bound_s=0.3)
        assert sent_ids(fakes, "fast") == [event_id_of(n) for n in (1, 2, 3)]
        assert sorted(pusher.closed) == sorted(slow)
    finally:
        release.set()
    # The pushes in flight end; none of the deliveries goes on to its next event after publish has returned.
    time.sleep(0.2)
    assert all(len(sent_ids(fakes, connection_id)) <= 1 for connection_id in slow)


def test_a_connection_whose_push_failed_is_closed_so_that_its_client_replays() -> None:
    fakes, _ = world()
    pusher = TroubledConnectionPusher(wait=time.sleep)
    fakes.pusher = pusher
    listening(fakes, "failing", "acme", 0)
    listening(fakes, "fine", "acme", 0)
    log_events(fakes, "acme", 2)
    pusher.unavailable.add("failing")
    stream.publish(fakes.event_log.events["acme"], fakes.dependencies())
    assert sent_ids(fakes, "fine") == [event_id_of(1), event_id_of(2)]
    assert pusher.closed == ["failing"]
    assert fakes.connections.get("failing") is not None  # its $disconnect forgets it


def test_publish_says_so_when_it_cannot_read_who_listens_and_pushes_nothing() -> None:
    # The caller retries the batch then (service/order_events.py): a listener must not silently lack it.
    fakes, _ = world()
    fakes.connections = UnreadableStreamConnections()
    log_events(fakes, "acme", 1)
    with pytest.raises(stream.ListenersUnreadable):
        stream.publish(fakes.event_log.events["acme"], fakes.dependencies())
    stream.publish([], fakes.dependencies())
    assert fakes.pusher.sent == []


# --- revoked keys ----------------------------------------------------------------------------------------------


def test_close_revoked_closes_exactly_the_connections_of_revoked_expired_and_deleted_keys() -> None:
    fakes, clock = world()
    deps = fakes.dependencies()
    keys = {
        name: issue_key("acme", T0, expires_in=timedelta(minutes=10) if name == "expired" else None)
        for name in ("valid", "revoked", "expired", "deleted")
    }
    for issued in keys.values():
        fakes.api_keys.add(issued.key)
    for name, issued in keys.items():
        for n in (1, 2):
            stream.connect(f"{name}-{n}", api_key=issued.plaintext, token=None, dependencies=deps)
    fakes.api_keys.revoke(keys["revoked"].key.key_id, T0)
    del fakes.api_keys.keys[keys["deleted"].key.key_id]
    clock.now = T0 + timedelta(minutes=10)
    assert stream.close_revoked_connections(deps) == 6
    closed = {f"{name}-{n}" for name in ("revoked", "expired", "deleted") for n in (1, 2)}
    assert set(fakes.pusher.closed) == closed
    assert set(fakes.connections.connections) == {"valid-1", "valid-2"}
    assert stream.close_revoked_connections(deps) == 0


def test_a_revoked_keys_connection_that_cannot_be_closed_now_is_kept_for_the_next_run() -> None:
    fakes, _ = world()
    pusher = TroubledConnectionPusher(wait=time.sleep)
    fakes.pusher = pusher
    deps: Dependencies = fakes.dependencies()
    connected(fakes, "c-1")
    fakes.api_keys.revoke(next(iter(fakes.api_keys.keys)), T0)
    pusher.unclosable.add("c-1")
    assert stream.close_revoked_connections(deps) == 0
    assert fakes.connections.get("c-1") is not None
    pusher.unclosable.clear()
    assert stream.close_revoked_connections(deps) == 1
    assert fakes.connections.get("c-1") is None
