"""Order entry's wire format: types, time in force, expires_at and stop_price, each refused the way invalid input is."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from devstack.exchange_sim.orders import InvalidOrder, OrderRequest, parse_order

pytestmark = pytest.mark.unit


def body(**changes: Any) -> bytes:
    order = {
        "client_order_id": "cl-1",
        "instrument": "US0378331005",
        "side": "buy",
        "type": "limit",
        "quantity": 10,
        "limit_price": 187.25,
        **changes,
    }
    return json.dumps({key: value for key, value in order.items() if value != "<absent>"}).encode()


def accepted(**changes: Any) -> OrderRequest:
    parsed = parse_order(body(**changes))
    assert isinstance(parsed, OrderRequest), parsed
    return parsed


def refused(**changes: Any) -> str:
    parsed = parse_order(body(**changes))
    assert isinstance(parsed, InvalidOrder), parsed
    # The id is kept, so that failures still count against the order.
    assert parsed.client_order_id == "cl-1"
    return parsed.problem


def test_an_order_without_time_in_force_is_a_day_order() -> None:
    order = accepted()

    assert (order.time_in_force, order.expires_at, order.stop_price) == ("day", None, None)
    assert order.to_json() == {
        "client_order_id": "cl-1",
        "instrument": "US0378331005",
        "side": "buy",
        "type": "limit",
        "quantity": 10,
        "limit_price": 187.25,
        "time_in_force": "day",
        "expires_at": None,
        "stop_price": None,
    }


@pytest.mark.parametrize("time_in_force", ["day", "gtc", "ioc", "fok"])
def test_each_time_in_force_without_expiry_is_accepted(time_in_force: str) -> None:
    order = accepted(time_in_force=time_in_force, expires_at=None, stop_price=None)

    assert order.time_in_force == time_in_force


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-12-02T15:00:00Z", "2026-12-02T15:00:00Z"),
        ("2026-12-02T16:00:00+01:00", "2026-12-02T15:00:00Z"),
        ("2026-12-02T15:00:00.250Z", "2026-12-02T15:00:00.250Z"),
    ],
)
def test_gtd_takes_expires_at_with_an_offset_and_keeps_it_in_utc(text: str, utc: str) -> None:
    order = accepted(time_in_force="gtd", expires_at=text)

    assert order.expires_at is not None
    assert order.expires_at.utcoffset() == datetime.timedelta(0)
    assert order.to_json()["expires_at"] == utc


def test_a_gtd_time_already_past_is_accepted() -> None:
    # The order expires right after `new` (test_fill_plans): a refusal would say less.
    assert accepted(time_in_force="gtd", expires_at="2020-01-01T00:00:00Z").expires_at is not None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"time_in_force": "week"}, "time_in_force must be one of"),
        ({"time_in_force": None}, "time_in_force must be one of"),
        ({"time_in_force": "GTC"}, "time_in_force must be one of"),
        ({"time_in_force": "gtd"}, "expires_at is required"),
        ({"time_in_force": "gtd", "expires_at": None}, "expires_at is required"),
        ({"time_in_force": "gtd", "expires_at": "2026-12-02T15:00:00"}, "expires_at must be an ISO 8601 time"),
        ({"time_in_force": "gtd", "expires_at": "tomorrow"}, "expires_at must be an ISO 8601 time"),
        ({"time_in_force": "gtd", "expires_at": 1796223600}, "expires_at must be an ISO 8601 time"),
        # Offsets that carry the time past datetime's range in UTC: refused, not a crash (500).
        ({"time_in_force": "gtd", "expires_at": "9999-12-31T23:59:59-01:00"}, "expires_at is out of range"),
        ({"time_in_force": "gtd", "expires_at": "0001-01-01T00:00:00+01:00"}, "expires_at is out of range"),
        ({"time_in_force": "day", "expires_at": "2026-12-02T15:00:00Z"}, "expires_at must be null"),
        ({"expires_at": "2026-12-02T15:00:00Z"}, "expires_at must be null"),
        ({"time_in_force": "gtc", "expires_at": "2026-12-02T15:00:00Z"}, "expires_at must be null"),
    ],
)
def test_a_wrong_time_in_force_or_expiry_is_refused(changes: dict[str, Any], words: str) -> None:
    assert words in refused(**changes)


def test_a_stop_order_takes_a_stop_price_and_no_limit() -> None:
    order = accepted(type="stop", limit_price=None, stop_price=190.5, time_in_force="gtc")

    assert (order.type, order.stop_price, order.limit_price) == ("stop", 190.5, None)
    assert order.to_json()["stop_price"] == 190.5


def test_a_stop_limit_order_takes_both_prices() -> None:
    order = accepted(type="stop_limit", limit_price=191.0, stop_price=190.5, side="sell")

    assert (order.type, order.stop_price, order.limit_price, order.time_in_force) == ("stop_limit", 190.5, 191.0, "day")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"type": "stop", "limit_price": None}, "stop_price is required for a stop order"),
        ({"type": "stop", "limit_price": None, "stop_price": None}, "stop_price is required"),
        ({"type": "stop", "stop_price": 190.0}, "limit_price must be null for a stop order"),
        ({"type": "stop_limit", "stop_price": 190.0, "limit_price": None}, "limit_price is required"),
        ({"type": "stop_limit"}, "stop_price is required for a stop_limit order"),
        ({"type": "stop", "limit_price": None, "stop_price": 0}, "stop_price must be positive"),
        ({"type": "stop", "limit_price": None, "stop_price": -5}, "stop_price must be positive"),
        ({"type": "stop", "limit_price": None, "stop_price": "190"}, "stop_price must be a finite number"),
        ({"type": "stop", "limit_price": None, "stop_price": True}, "stop_price must be a finite number"),
        # An integer no float holds: refused, not a crash (500).
        ({"type": "stop", "limit_price": None, "stop_price": 10**400}, "stop_price must be a finite number"),
        ({"limit_price": -(10**400)}, "limit_price must be a finite number"),
        ({"stop_price": 190.0}, "stop_price must be null for a limit order"),
        ({"type": "market", "limit_price": None, "stop_price": 190.0}, "stop_price must be null for a market order"),
        ({"type": "trailing_stop"}, "type must be one of"),
    ],
)
def test_a_wrong_stop_price_or_type_is_refused(changes: dict[str, Any], words: str) -> None:
    assert words in refused(**changes)


@pytest.mark.parametrize("time_in_force", ["ioc", "fok"])
@pytest.mark.parametrize(("order_type", "limit_price"), [("stop", None), ("stop_limit", 191.0)])
def test_immediate_time_in_force_is_refused_for_stop_types(
    time_in_force: str, order_type: str, limit_price: float | None
) -> None:
    problem = refused(type=order_type, limit_price=limit_price, stop_price=190.0, time_in_force=time_in_force)

    assert problem == f"time_in_force {time_in_force!r} is not allowed for a {order_type} order"


@pytest.mark.parametrize("time_in_force", ["day", "gtc"])
def test_stop_types_rest_as_day_or_gtc(time_in_force: str) -> None:
    assert accepted(type="stop", limit_price=None, stop_price=1.0, time_in_force=time_in_force).time_in_force


def test_a_stop_order_may_be_gtd() -> None:
    order = accepted(type="stop", limit_price=None, stop_price=1.0, time_in_force="gtd", expires_at="2026-12-24T12:00Z")

    assert order.to_json()["expires_at"] == "2026-12-24T12:00:00Z"


def test_the_old_fields_are_still_required() -> None:
    assert "missing field(s): limit_price" in refused(limit_price="<absent>")
