"""When resting orders expire: the session close (a time of day in UTC, or every session_length_s), expires_at."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest

from devstack.exchange_sim.config import SimConfig
from devstack.exchange_sim.orders import OrderRequest
from devstack.exchange_sim.time_in_force import Lifetime, expiry_of, lifetime_of, session_close_after

pytestmark = pytest.mark.unit

UTC = datetime.UTC
LIMIT = OrderRequest("cl-1", "US0378331005", "buy", "limit", 10, 100.0)


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("close", "now", "expected"),
    [
        ("20:00", "2026-12-02T06:40:00+00:00", "2026-12-02T20:00:00+00:00"),
        # At the close itself the session is over: the next one closes tomorrow.
        ("20:00", "2026-12-02T20:00:00+00:00", "2026-12-03T20:00:00+00:00"),
        ("20:00", "2026-12-02T21:30:00+00:00", "2026-12-03T20:00:00+00:00"),
        ("16:30:15", "2026-12-31T16:30:14+00:00", "2026-12-31T16:30:15+00:00"),
        ("00:00", "2026-12-31T23:59:59+00:00", "2027-01-01T00:00:00+00:00"),
        # The close is a time of day in UTC, whatever offset the moment is written with.
        ("20:00", "2026-12-02T22:00:00+01:00", "2026-12-03T20:00:00+00:00"),
    ],
)
def test_sessions_close_at_a_time_of_day_in_utc(close: str, now: str, expected: str) -> None:
    assert session_close_after(at(now), SimConfig(session_close_utc=close)) == at(expected)


@pytest.mark.parametrize(
    ("length", "now", "expected"),
    [
        (5.0, "2026-12-02T06:40:00+00:00", "2026-12-02T06:40:05+00:00"),
        (5.0, "2026-12-02T06:40:04.900+00:00", "2026-12-02T06:40:05+00:00"),
        (2.0, "2026-12-02T06:40:01+00:00", "2026-12-02T06:40:02+00:00"),
        (3600.0, "2026-12-02T06:40:00+00:00", "2026-12-02T07:00:00+00:00"),
    ],
)
def test_short_sessions_close_at_every_multiple_of_their_length(length: float, now: str, expected: str) -> None:
    # session_length_s wins over the time of day.
    config = SimConfig(session_close_utc="20:00", session_length_s=length)

    assert session_close_after(at(now), config) == at(expected)


def test_a_day_order_expires_at_the_session_close_and_gtd_at_its_time() -> None:
    now = at("2026-12-02T06:40:00+00:00")
    expires_at = at("2026-12-05T12:00:00+00:00")

    assert expiry_of(LIMIT, SimConfig(), now) == at("2026-12-02T20:00:00+00:00")
    assert expiry_of(replace(LIMIT, time_in_force="gtd", expires_at=expires_at), SimConfig(), now) == expires_at
    for time_in_force in ("gtc", "ioc", "fok"):
        assert expiry_of(replace(LIMIT, time_in_force=time_in_force), SimConfig(), now) is None


def test_the_lifetime_counts_from_now_and_the_ttl_is_for_day_limit_orders_alone() -> None:
    now = at("2026-12-02T19:59:00+00:00")
    close = at("2026-12-02T20:00:00+00:00")
    config = SimConfig(limit_ttl_s=1.0)

    assert lifetime_of(LIMIT, config, close, now) == Lifetime(60.0, 1.0)
    assert lifetime_of(LIMIT, SimConfig(), close, now) == Lifetime(60.0, None)
    gtd = replace(LIMIT, time_in_force="gtd")
    assert lifetime_of(gtd, config, close, now) == Lifetime(60.0, None)
    assert lifetime_of(replace(LIMIT, time_in_force="gtc"), config, None, now) == Lifetime(None, None)
    # A stop waiting for its trigger is not a limit order yet.
    stop_limit = replace(LIMIT, type="stop_limit", stop_price=99.0)
    assert lifetime_of(stop_limit, config, close, now) == Lifetime(60.0, None)
    market = replace(LIMIT, type="market", limit_price=None)
    assert lifetime_of(market, config, close, now) == Lifetime(60.0, None)


@pytest.mark.parametrize(
    ("lifetime", "acknowledged_after_s", "deadline"),
    [
        (Lifetime(60.0, None), 0.2, 60.0),
        # The TTL runs from `new`.
        (Lifetime(60.0, 1.0), 0.2, 1.2),
        (Lifetime(0.5, 1.0), 0.2, 0.5),
        (Lifetime(None, 1.0), 0.2, 1.2),
        (Lifetime(None, None), 0.2, None),
        (Lifetime(-30.0, None), 0.2, -30.0),
    ],
)
def test_the_deadline_is_the_first_of_expiry_and_ttl(
    lifetime: Lifetime, acknowledged_after_s: float, deadline: float | None
) -> None:
    assert lifetime.deadline_s(acknowledged_after_s) == deadline
