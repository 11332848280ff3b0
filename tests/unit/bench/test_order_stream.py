"""The order stream benchmark's arithmetic: latency per fill event, delivery rate, the consumers' figures."""

from __future__ import annotations

from typing import Any

import pytest

from bench.order_stream import (
    consumer_figures,
    delivery,
    first_arrivals,
    report_to_client_latencies,
    timestamp,
)
from devstack.stream_client import Received

pytestmark = pytest.mark.unit

REPORT_TIME = "2026-12-02T03:00:00.250Z"
ORDER_TIME = "2026-12-02T03:00:00.350Z"  # the order updated 100 ms after the report


def event(
    event_id: str, kind: str = "fill", execution_time: str | None = REPORT_TIME, time: str = ORDER_TIME
) -> dict[str, Any]:
    execution = None if execution_time is None else {"id": f"E{event_id}", "time": execution_time}
    body = {"id": event_id, "type": kind, "time": time, "order": {"id": "o"}, "execution": execution}
    return {"stream": "orders", "event": body}


def test_a_time_with_a_z_is_utc() -> None:
    assert timestamp("1970-01-01T00:00:01.500Z") == 1.5


def test_only_the_first_arrival_of_an_event_counts() -> None:
    received = [Received(1.0, event("1")), Received(2.0, event("1")), Received(3.0, event("2"))]
    assert [item.at for item in first_arrivals(received)] == [1.0, 3.0]


def test_latency_is_from_the_reports_transact_time_to_the_first_arrival_of_fill_events_only() -> None:
    base = timestamp(REPORT_TIME)
    received = [
        Received(base + 0.5, {"stream": "orders", "listening": True}),
        Received(base + 0.1, event("1", kind="created", execution_time=None)),
        Received(base + 0.2, event("2", kind="partial_fill")),
        Received(base + 0.9, event("2", kind="partial_fill")),  # a repeat: not a second sample
        Received(base + 0.4, event("3", kind="fill")),
        Received(base + 0.3, event("4", kind="fill", execution_time=None)),  # a correction: no report to time from
    ]
    latencies = report_to_client_latencies(received)
    assert latencies.report_to_client == pytest.approx([0.2, 0.4], abs=1e-3)
    assert latencies.report_to_order == pytest.approx([0.1, 0.1], abs=1e-3)
    assert latencies.order_to_client == pytest.approx([0.1, 0.3], abs=1e-3)


def test_delivery_counts_distinct_events_of_every_client_over_first_to_last_arrival() -> None:
    one = [Received(10.0, event("1")), Received(10.5, event("1")), Received(11.0, event("2"))]
    two = [Received(10.2, event("1")), Received(14.0, event("2")), Received(14.1, {"listening": True})]
    delivered = delivery([one, two])
    assert (delivered.events, delivered.messages) == (4, 5)
    assert delivered.seconds == pytest.approx(4.0)
    assert delivered.per_second == pytest.approx(1.0)


def test_no_events_delivered_is_no_rate() -> None:
    assert delivery([[]]).events == 0


def test_the_consumers_figures_come_from_its_invocation_lines_only() -> None:
    lines = [
        "2026-12-02 03:00:00,000 INFO devstack.runner [k] invoked apply_executions shard=shardId-0 records=100 "
        "sequence=1..100 ok duration_ms=500 request=r1",
        "2026-12-02 03:00:02,000 INFO devstack.runner [k] invoked apply_executions shard=shardId-0 records=50 "
        "sequence=101..150 failed from 120 (boom) duration_ms=250 request=r2",
        "2026-12-02 03:00:01,000 INFO devstack.runner [d] invoked publish_order_events shard=s records=7 "
        "sequence=1..7 ok duration_ms=70 request=r3",
        "2026-12-02 03:00:01,500 INFO devstack.runner [k] apply_executions: reading from TRIM_HORIZON",
    ]
    kinesis = consumer_figures(lines, "apply_executions")
    assert (kinesis.invocations, kinesis.records) == (2, 150)
    assert kinesis.handler_s == pytest.approx(0.75)
    assert kinesis.records_per_handler_second == pytest.approx(200.0)
    assert kinesis.window_s == pytest.approx(2.0)
    assert kinesis.records_per_second == pytest.approx(75.0)
    stream = consumer_figures(lines, "publish_order_events")
    assert (stream.invocations, stream.records, stream.window_s) == (1, 7, 0.0)
