"""Feed bridge core with in-memory fakes: seq tracking, partial-failure retries, batching, parsing, settings."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed_bridge.batching import RecordBuffer
from feed_bridge.records import FALLBACK_PARTITION_KEY, MAX_RECORD_BYTES, InvalidReport, Record, feed_url, parse_report
from feed_bridge.retry import Backoff, SinkError, put_until_stored, split_results
from feed_bridge.settings import ConfigurationError, load_settings
from feed_bridge.tracker import SeqTracker

pytestmark = pytest.mark.unit

# Tests wait for an event that must come long before this; it only keeps a
# broken implementation from hanging the run.
GUARD_S = 10.0


def record(seq: int, key: str | None = None, data: bytes | None = None) -> Record:
    return Record(seq, key or f"order-{seq % 3}", data or json.dumps({"seq": seq}).encode())


# --- SeqTracker ------------------------------------------------------------------


def test_tracker_advances_in_order() -> None:
    tracker = SeqTracker()
    assert all(tracker.accept(seq) for seq in (1, 2, 3))
    assert tracker.mark_put([1, 2, 3]) == 3
    assert tracker.in_flight == 0


def test_tracker_waits_for_the_hole_below_an_out_of_order_seq() -> None:
    tracker = SeqTracker()
    for seq in (1, 3, 2, 4):
        assert tracker.accept(seq)

    assert tracker.mark_put([1, 3, 4]) == 1  # 2 not put yet: 3 and 4 wait above it
    assert tracker.put_above_checkpoint == 2
    assert tracker.mark_put([2]) == 4
    assert tracker.put_above_checkpoint == 0


def test_tracker_rejects_duplicates_in_flight_put_and_below_checkpoint() -> None:
    tracker = SeqTracker()
    assert tracker.accept(1)
    assert tracker.accept(3)
    assert not tracker.accept(1)  # in flight
    tracker.mark_put([3])
    assert not tracker.accept(3)  # put, above the hole at 2
    tracker.mark_put([1])
    assert not tracker.accept(1)  # below the checkpoint
    assert tracker.accept(2)
    assert tracker.mark_put([2]) == 3


def test_tracker_resumes_from_a_stored_checkpoint() -> None:
    tracker = SeqTracker(checkpoint=10)
    assert not tracker.accept(10)
    assert not tracker.accept(1)
    assert tracker.accept(11)
    assert tracker.mark_put([11]) == 11


def test_tracker_released_seq_can_be_accepted_again() -> None:
    tracker = SeqTracker()
    assert tracker.accept(1)
    tracker.release(1)
    assert tracker.in_flight == 0
    assert tracker.accept(1)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), count=st.integers(min_value=1, max_value=60))
def test_tracker_checkpoint_is_always_the_highest_contiguous_put_seq(data: st.DataObject, count: int) -> None:
    """A live feed with repeats and swapped neighbours, put in batches that complete in any order."""
    seqs = list(range(1, count + 1))
    for i in data.draw(st.lists(st.integers(0, count - 2), max_size=count)) if count > 1 else []:
        seqs[i], seqs[i + 1] = seqs[i + 1], seqs[i]  # swap neighbours
    feed: list[int] = []
    for seq in seqs:
        feed.extend([seq] * data.draw(st.integers(1, 3)))  # repeats
    tracker = SeqTracker()
    accepted = [seq for seq in feed if tracker.accept(seq)]
    assert sorted(accepted) == list(range(1, count + 1))  # each seq exactly once

    put: set[int] = set()
    pending = list(accepted)
    while pending:
        size = data.draw(st.integers(1, len(pending)))
        batch = data.draw(st.permutations(pending))[:size]
        pending = [seq for seq in pending if seq not in batch]
        put.update(batch)
        checkpoint = tracker.mark_put(batch)
        contiguous = 0
        while contiguous + 1 in put:
            contiguous += 1
        assert checkpoint == contiguous
        assert all(not tracker.accept(seq) for seq in put)  # nothing put is taken again
    assert tracker.checkpoint == count


# --- put_until_stored: partial failures ------------------------------------------------


class ScriptedSink:
    """A sink that fails the records whose seq a script names, attempt by attempt, and stores the rest."""

    def __init__(self, failures: Sequence[dict[int, str] | SinkError]) -> None:
        self.failures = list(failures)
        self.calls: list[list[Record]] = []
        self.stored: list[Record] = []

    def put_records(self, records: Sequence[Record]) -> Sequence[str | None]:
        self.calls.append(list(records))
        failing = self.failures.pop(0) if self.failures else {}
        if isinstance(failing, SinkError):
            raise failing
        errors = [failing.get(r.seq) for r in records]
        self.stored.extend(r for r, error in zip(records, errors, strict=True) if error is None)
        return errors


class RecordedSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def direct(function: Callable[[], Sequence[str | None]]) -> Sequence[str | None]:
    return function()


def run_put(sink: ScriptedSink, records: list[Record], backoff: Backoff | None = None):
    sleep = RecordedSleep()
    stored_callbacks: list[list[int]] = []
    outcome = asyncio.run(
        put_until_stored(
            sink,
            records,
            backoff or Backoff(0.05, 5.0, random.Random(1)),
            on_stored=lambda rs: stored_callbacks.append([r.seq for r in rs]),
            run_blocking=direct,
            sleep=sleep,
        )
    )
    return outcome, sleep.delays, stored_callbacks


def test_partial_failure_retries_only_the_failed_records_with_their_data() -> None:
    records = [record(seq, data=f'{{"seq": {seq}, "payload": "p{seq}"}}'.encode()) for seq in range(1, 7)]
    sink = ScriptedSink(
        [
            {2: "ProvisionedThroughputExceededException", 5: "InternalFailure", 6: "InternalFailure"},
            {5: "ProvisionedThroughputExceededException"},
            {},
        ]
    )

    outcome, delays, stored_callbacks = run_put(sink, records)

    assert [[r.seq for r in call] for call in sink.calls] == [[1, 2, 3, 4, 5, 6], [2, 5, 6], [5]]
    # The retried entries are the same records: data and key unchanged.
    assert sink.calls[1] == [records[1], records[4], records[5]]
    assert sorted(r.seq for r in sink.stored) == [1, 2, 3, 4, 5, 6]
    assert sink.stored.count(records[4]) == 1
    assert stored_callbacks == [[1, 3, 4], [2, 6], [5]]
    assert outcome.attempts == 3
    assert outcome.retried_records == 4
    assert outcome.error_codes == {"ProvisionedThroughputExceededException": 2, "InternalFailure": 2}
    assert len(delays) == 2


def test_a_call_failing_as_a_whole_is_retried_with_every_record() -> None:
    records = [record(seq) for seq in (1, 2)]
    sink = ScriptedSink([SinkError("EndpointConnectionError", "down"), SinkError("ThrottlingException", "slow"), {}])

    outcome, delays, stored_callbacks = run_put(sink, records)

    assert [[r.seq for r in call] for call in sink.calls] == [[1, 2], [1, 2], [1, 2]]
    assert stored_callbacks == [[1, 2]]
    assert outcome.error_codes == {"EndpointConnectionError": 2, "ThrottlingException": 2}
    assert len(delays) == 2


def test_retries_continue_past_many_failures_and_back_off_up_to_the_cap() -> None:
    records = [record(1)]
    sink = ScriptedSink([{1: "ProvisionedThroughputExceededException"}] * 30)

    outcome, delays, _ = run_put(sink, records, Backoff(0.1, 2.0, random.Random(7)))

    assert outcome.attempts == 31
    assert sink.stored == records
    assert all(0.1 <= delay <= 2.0 for delay in delays)
    assert delays[-1] >= 1.0  # reached the cap's upper half


def test_split_results_treats_a_malformed_answer_as_all_failed() -> None:
    records = [record(1), record(2)]
    assert split_results(records, [None, "X"]) == ([records[0]], [records[1]])
    assert split_results(records, [None]) == ([], records)


def test_backoff_doubles_from_min_to_max_with_jitter() -> None:
    backoff = Backoff(0.1, 5.0, random.Random(3))
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (5, 3.2), (6, 5.0), (10_000, 5.0)]:
        delays = [backoff.delay(attempt) for _ in range(50)]
        assert all(max(0.1, ceiling / 2) <= d <= ceiling for d in delays), (attempt, delays)
    assert len({Backoff(1, 8).delay(3) for _ in range(20)}) > 1  # jittered
    with pytest.raises(ValueError):
        Backoff(2, 1)


# --- RecordBuffer ---------------------------------------------------------------------------


def test_buffer_hands_out_a_full_batch_without_waiting_for_the_linger() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        buffer = RecordBuffer(batch_size=3, linger_s=3600)
        for seq in range(1, 5):
            await buffer.put(record(seq))
        first = await asyncio.wait_for(buffer.next_batch(), GUARD_S)
        return [r.seq for r in first], [r.seq for r in buffer._records]

    first, left = asyncio.run(scenario())
    assert first == [1, 2, 3]
    assert left == [4]


def test_buffer_wakes_a_waiting_flusher_when_the_batch_fills() -> None:
    async def scenario() -> list[int]:
        buffer = RecordBuffer(batch_size=2, linger_s=3600)
        waiting = asyncio.create_task(buffer.next_batch())
        await buffer.put(record(1))
        await asyncio.sleep(0)
        assert not waiting.done()  # one record, lingering
        await buffer.put(record(2))
        return [r.seq for r in await asyncio.wait_for(waiting, GUARD_S)]

    assert asyncio.run(scenario()) == [1, 2]


def test_buffer_hands_out_a_partial_batch_after_the_linger() -> None:
    linger_s = 0.05

    async def scenario() -> tuple[list[int], float]:
        buffer = RecordBuffer(batch_size=500, linger_s=linger_s)
        await buffer.put(record(1))
        started = time.monotonic()
        await buffer.put(record(2))
        batch = await asyncio.wait_for(buffer.next_batch(), GUARD_S)
        return [r.seq for r in batch], time.monotonic() - started

    batch, waited = asyncio.run(scenario())
    assert batch == [1, 2]
    assert waited >= linger_s * 0.9  # lingered (timer resolution aside) for more records


def test_buffer_splits_batches_at_the_byte_limit() -> None:
    async def scenario() -> list[list[int]]:
        buffer = RecordBuffer(batch_size=500, linger_s=3600, max_batch_bytes=250)
        for seq in range(1, 6):
            await buffer.put(record(seq, key="k", data=b"x" * 99))  # 100 bytes with the key
        return [[r.seq for r in await asyncio.wait_for(buffer.next_batch(), GUARD_S)] for _ in range(2)]

    assert asyncio.run(scenario()) == [[1, 2], [3, 4]]


def test_closed_buffer_drains_without_lingering_then_returns_empty() -> None:
    async def scenario() -> tuple[list[int], list[Record]]:
        buffer = RecordBuffer(batch_size=500, linger_s=3600)
        await buffer.put(record(1))
        await buffer.close()
        return [r.seq for r in await asyncio.wait_for(buffer.next_batch(), GUARD_S)], await buffer.next_batch()

    assert asyncio.run(scenario()) == ([1], [])


def test_full_buffer_makes_the_reader_wait_until_a_batch_is_taken() -> None:
    async def scenario() -> list[int]:
        buffer = RecordBuffer(batch_size=2, linger_s=0, max_records=2)
        await buffer.put(record(1))
        await buffer.put(record(2))
        blocked = asyncio.create_task(buffer.put(record(3)))
        await asyncio.sleep(0.01)
        assert not blocked.done()
        taken = await buffer.next_batch()
        await asyncio.wait_for(blocked, GUARD_S)
        return [r.seq for r in taken] + [r.seq for r in buffer._records]

    assert asyncio.run(scenario()) == [1, 2, 3]


# --- parsing, URL, settings --------------------------------------------------------------


def test_parse_report_keeps_the_message_byte_for_byte() -> None:
    text = '{"seq": 7,  "exec_id": "e-7", "client_order_id": "c-1", "last_price": "187.2500", "zz": [1 ,2]}'
    parsed = parse_report(text)
    assert parsed == Record(7, "c-1", text.encode())


def test_parse_report_puts_a_report_without_client_order_id_under_the_fallback_key() -> None:
    assert parse_report('{"seq": 3}').partition_key == FALLBACK_PARTITION_KEY
    assert parse_report('{"seq": 3, "client_order_id": ""}').partition_key == FALLBACK_PARTITION_KEY


@pytest.mark.parametrize(
    "message",
    ["not json", "[1, 2]", '{"seq": "1"}', '{"seq": true}', '{"seq": 0}', '{"exec_id": "x"}', b"\xff\xfe"],
)
def test_parse_report_rejects_messages_without_a_usable_seq(message: str | bytes) -> None:
    with pytest.raises(InvalidReport) as raised:
        parse_report(message)
    assert raised.value.seq is None


def test_parse_report_rejects_a_report_too_big_for_kinesis_but_names_its_seq() -> None:
    message = json.dumps({"seq": 9, "client_order_id": "c", "pad": "x" * MAX_RECORD_BYTES})
    with pytest.raises(InvalidReport) as raised:
        parse_report(message)
    assert raised.value.seq == 9


def test_feed_url_sets_from_seq_and_keeps_other_parameters() -> None:
    assert feed_url("ws://127.0.0.1:8002/feed", 1) == "ws://127.0.0.1:8002/feed?from_seq=1"
    assert feed_url("wss://x/feed?session=a&from_seq=3", 42) == "wss://x/feed?session=a&from_seq=42"


def test_settings_name_every_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EXECUTIONS_STREAM_NAME", "FEED_CHECKPOINTS_TABLE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EXCHANGE_FEED_URL", "http://127.0.0.1:8002/feed")
    monkeypatch.setenv("FEED_BATCH_SIZE", "501")

    with pytest.raises(ConfigurationError) as raised:
        load_settings()

    message = str(raised.value)
    for name in ("EXECUTIONS_STREAM_NAME", "FEED_CHECKPOINTS_TABLE_NAME", "EXCHANGE_FEED_URL", "FEED_BATCH_SIZE"):
        assert name in message


def test_settings_reject_reversed_backoff_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTIONS_STREAM_NAME", "s")
    monkeypatch.setenv("FEED_CHECKPOINTS_TABLE_NAME", "table")
    monkeypatch.setenv("FEED_RECONNECT_MIN_S", "6")

    with pytest.raises(ConfigurationError, match="FEED_RECONNECT_MIN_S"):
        load_settings()


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTIONS_STREAM_NAME", "s")
    monkeypatch.setenv("FEED_CHECKPOINTS_TABLE_NAME", "table")
    for name in ("EXCHANGE_FEED_URL", "FEED_ID", "FEED_BATCH_SIZE", "FEED_LINGER_S"):
        monkeypatch.delenv(name, raising=False)

    loaded = load_settings()

    assert str(loaded.exchange_feed_url) == "ws://127.0.0.1:8002/feed"
    assert (loaded.feed_id, loaded.feed_batch_size, loaded.feed_linger_s) == ("exchange-sim", 500, 0.1)
