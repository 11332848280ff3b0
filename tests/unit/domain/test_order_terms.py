"""Order terms: which prices each order type takes, which time in force it may have, when a gtd order may expire."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from chalicelib.domain import model, order_terms
from chalicelib.domain.model import Order
from chalicelib.domain.order_terms import (
    MAX_EXPIRY_AHEAD,
    ExpiryRefused,
    OrderTerms,
    OrderType,
    Side,
    TermsProblem,
    TimeInForce,
    check_expiry,
    expiry_problem,
    price_problems,
    time_in_force_problems,
)
from tests.contracts.order_repository import gtd_stop_limit_terms

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


def test_the_terms_are_still_importable_from_the_model_as_the_same_objects() -> None:
    for name in ("OrderTerms", "OrderType", "Side", "TimeInForce"):
        assert getattr(model, name) is getattr(order_terms, name)


def test_terms_without_the_new_fields_are_day_orders_without_expiry_or_stop() -> None:
    terms = OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", 10, Decimal("99.50"), "k-1")
    assert terms.time_in_force is TimeInForce.DAY
    assert terms.expires_at is None
    assert terms.stop_price is None


@pytest.mark.parametrize(
    ("order_type", "limit", "stop", "expected"),
    [
        (OrderType.MARKET, False, False, []),
        (OrderType.LIMIT, True, False, []),
        (OrderType.STOP, False, True, []),
        (OrderType.STOP_LIMIT, True, True, []),
        (OrderType.LIMIT, False, False, [("limit_price", "limit_price is required for type limit")]),
        (OrderType.STOP_LIMIT, False, True, [("limit_price", "limit_price is required for type stop_limit")]),
        (OrderType.MARKET, True, False, [("limit_price", "limit_price must be absent or null for type market")]),
        (OrderType.STOP, True, True, [("limit_price", "limit_price must be absent or null for type stop")]),
        (OrderType.STOP, False, False, [("stop_price", "stop_price is required for type stop")]),
        (OrderType.STOP_LIMIT, True, False, [("stop_price", "stop_price is required for type stop_limit")]),
        (OrderType.MARKET, False, True, [("stop_price", "stop_price must be absent or null for type market")]),
        (OrderType.LIMIT, True, True, [("stop_price", "stop_price must be absent or null for type limit")]),
        (
            OrderType.STOP_LIMIT,
            False,
            False,
            [
                ("limit_price", "limit_price is required for type stop_limit"),
                ("stop_price", "stop_price is required for type stop_limit"),
            ],
        ),
    ],
)
def test_each_type_takes_its_prices_and_refuses_the_others(
    order_type: OrderType, limit: bool, stop: bool, expected: list[tuple[str, str]]
) -> None:
    assert price_problems(order_type, limit, stop) == [TermsProblem(field, message) for field, message in expected]


@pytest.mark.parametrize("time_in_force", list(TimeInForce))
@pytest.mark.parametrize("order_type", [OrderType.MARKET, OrderType.LIMIT])
def test_market_and_limit_orders_take_every_time_in_force(order_type: OrderType, time_in_force: TimeInForce) -> None:
    has_expiry = time_in_force is TimeInForce.GTD
    assert time_in_force_problems(order_type, time_in_force, has_expiry) == []


@pytest.mark.parametrize("time_in_force", [TimeInForce.IOC, TimeInForce.FOK])
@pytest.mark.parametrize("order_type", [OrderType.STOP, OrderType.STOP_LIMIT])
def test_stop_orders_refuse_ioc_and_fok(order_type: OrderType, time_in_force: TimeInForce) -> None:
    (problem,) = time_in_force_problems(order_type, time_in_force, has_expiry=False)
    assert problem.field == "time_in_force"
    assert f"time_in_force {time_in_force} cannot be used with type {order_type}" in problem.message


@pytest.mark.parametrize("time_in_force", [TimeInForce.DAY, TimeInForce.GTC])
def test_stop_orders_take_day_gtc_and_gtd(time_in_force: TimeInForce) -> None:
    assert time_in_force_problems(OrderType.STOP, time_in_force, has_expiry=False) == []
    assert time_in_force_problems(OrderType.STOP_LIMIT, TimeInForce.GTD, has_expiry=True) == []


def test_gtd_requires_an_expiry_and_every_other_time_in_force_refuses_one() -> None:
    assert time_in_force_problems(OrderType.LIMIT, TimeInForce.GTD, has_expiry=False) == [
        TermsProblem("expires_at", "expires_at is required for time_in_force gtd")
    ]
    for other in set(TimeInForce) - {TimeInForce.GTD}:
        assert time_in_force_problems(OrderType.LIMIT, other, has_expiry=True) == [
            TermsProblem("expires_at", f"expires_at must be absent or null for time_in_force {other}")
        ]


def test_an_unknown_order_type_still_has_its_expiry_checked() -> None:
    assert [p.field for p in time_in_force_problems(None, TimeInForce.GTD, has_expiry=False)] == ["expires_at"]
    assert time_in_force_problems(None, TimeInForce.IOC, has_expiry=False) == []


def test_an_expiry_must_be_in_the_future_and_at_most_90_days_ahead() -> None:
    assert expiry_problem(NOW + timedelta(seconds=1), NOW) is None
    assert expiry_problem(NOW + MAX_EXPIRY_AHEAD, NOW) is None
    assert expiry_problem(NOW, NOW) == "expires_at must be in the future"
    assert expiry_problem(NOW - timedelta(days=1), NOW) == "expires_at must be in the future"
    assert (
        expiry_problem(NOW + MAX_EXPIRY_AHEAD + timedelta(seconds=1), NOW) == "expires_at must be at most 90 days ahead"
    )
    assert timedelta(days=90) == MAX_EXPIRY_AHEAD


def test_an_expiry_in_another_offset_is_compared_as_the_moment_it_names() -> None:
    berlin_winter = timezone(timedelta(hours=1))
    # 10:00+01:00 is 09:00Z, before NOW (09:30Z), though its clock reading is later.
    assert expiry_problem(datetime(2026, 12, 2, 10, 0, tzinfo=berlin_winter), NOW) == "expires_at must be in the future"
    assert expiry_problem(datetime(2026, 12, 2, 10, 31, tzinfo=berlin_winter), NOW) is None


@pytest.mark.parametrize(
    "changed",
    [
        {"time_in_force": TimeInForce.GTC},
        {"time_in_force": TimeInForce.GTD, "expires_at": NOW + timedelta(days=1)},
        {"type": OrderType.STOP_LIMIT, "stop_price": Decimal("101.00")},
    ],
)
def test_a_repeated_client_order_id_with_other_new_terms_is_not_the_same_order(changed: dict[str, object]) -> None:
    terms = OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", 10, Decimal("99.50"), "k-1")
    order = Order.create("acct-1", terms, NOW)
    other = OrderTerms(**{**terms.__dict__, **changed})  # type: ignore[arg-type]
    assert Order.create("acct-1", other, NOW).id == order.id  # the same idempotency key
    assert not order.has_same_terms(other)  # so the service raises IdempotencyConflict (409)
    assert order.has_same_terms(OrderTerms(**terms.__dict__))


def test_the_expiry_is_checked_as_sent_and_kept_to_the_second() -> None:
    terms = dataclasses.replace(gtd_stop_limit_terms(), expires_at=NOW + timedelta(milliseconds=400))
    check_expiry(terms, NOW)  # 400 ms ahead: in the future
    kept = terms.to_the_second()
    assert kept.expires_at == NOW
    assert kept.to_the_second() is kept
    with pytest.raises(ExpiryRefused, match="expires_at must be in the future") as refused:
        check_expiry(kept, NOW)
    assert refused.value.field == "expires_at"
    check_expiry(OrderTerms(OrderType.MARKET, Side.BUY, "US0378331005", 1, None), NOW)  # no expiry: nothing to check
