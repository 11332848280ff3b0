"""The price paths stop orders watch: the walk, setting a price, and which stops a price reaches."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from devstack.exchange_sim.config import InvalidValue
from devstack.exchange_sim.fill_plans import reference_price
from devstack.exchange_sim.prices import Market, PendingStop, as_price, stop_reached

pytestmark = pytest.mark.unit

ISIN = "US0378331005"


@pytest.mark.parametrize(
    ("side", "stop", "price", "reached"),
    [
        ("buy", "100.00", "99.99", False),
        ("buy", "100.00", "100.00", True),
        ("buy", "100.00", "100.01", True),
        ("sell", "100.00", "100.01", False),
        ("sell", "100.00", "100.00", True),
        ("sell", "100.00", "99.99", True),
    ],
)
def test_a_buy_stop_is_reached_from_below_and_a_sell_stop_from_above(
    side: str, stop: str, price: str, reached: bool
) -> None:
    assert stop_reached(side, Decimal(stop), Decimal(price)) is reached


def test_a_path_starts_at_the_reference_price() -> None:
    assert Market().price(ISIN) == reference_price(ISIN)


def test_each_tick_moves_a_path_by_at_most_the_step_to_the_cent() -> None:
    market = Market()
    rng = random.Random(3)
    previous = market.price(ISIN)
    moved = 0
    for _ in range(200):
        market.step(rng, 10)
        price = market.price(ISIN)
        assert price == price.quantize(Decimal("0.01"))
        assert abs(price - previous) <= previous * Decimal("0.001") + Decimal("0.005")
        moved += price != previous
        previous = price
    assert moved > 100


def test_a_step_of_zero_holds_prices_still() -> None:
    market = Market()
    market.set_price(ISIN, Decimal("190.00"))

    for _ in range(10):
        market.step(random.Random(1), 0)

    assert market.price(ISIN) == Decimal("190.00")


def test_the_walk_is_the_same_for_a_seed() -> None:
    def walk(seed: int) -> list[Decimal]:
        market, rng, prices = Market(), random.Random(seed), []
        market.price("DE0007164600")
        market.price(ISIN)
        for _ in range(20):
            market.step(rng, 25)
            prices.append(market.price(ISIN))
        return prices

    assert walk(9) == walk(9)
    assert walk(9) != walk(10)


def test_a_price_never_walks_below_a_cent() -> None:
    market = Market()
    market.set_price(ISIN, Decimal("0.01"))

    for _ in range(50):
        market.step(random.Random(4), 10000)
        assert market.price(ISIN) >= Decimal("0.01")


def test_only_reached_stops_trigger_and_each_only_once() -> None:
    market = Market()
    market.set_price(ISIN, Decimal("100.00"))
    buy = PendingStop("buy-1", ISIN, "buy", Decimal("105.00"))
    sell = PendingStop("sell-1", ISIN, "sell", Decimal("95.00"))
    market.watch(buy)
    market.watch(sell)

    assert market.reached() == []
    market.set_price(ISIN, Decimal("105.00"))
    assert market.reached() == [(buy, Decimal("105.00"))]
    assert market.reached() == []
    assert not market.watching("buy-1")
    market.set_price(ISIN, Decimal("94.50"))
    assert market.reached("sell-1") == [(sell, Decimal("94.50"))]


def test_a_stop_on_another_instrument_is_not_reached() -> None:
    market = Market()
    market.watch(PendingStop("buy-1", "DE0007164600", "buy", Decimal("0.01")))
    market.watch(PendingStop("buy-2", ISIN, "buy", Decimal("99999.00")))
    market.set_price(ISIN, Decimal("1.00"))

    assert [stop.client_order_id for stop, _ in market.reached()] == ["buy-1"]


def test_a_forgotten_stop_never_triggers_and_clear_forgets_paths() -> None:
    market = Market()
    market.watch(PendingStop("buy-1", ISIN, "buy", Decimal("0.01")))
    market.forget("buy-1")
    market.set_price(ISIN, Decimal("1.00"))

    assert market.reached() == []
    market.clear()
    assert market.price(ISIN) == reference_price(ISIN)


@pytest.mark.parametrize("value", [190.5, 190, 0.01, 190.25])
def test_a_price_is_a_positive_number_with_two_decimals(value: float) -> None:
    assert as_price(value) == Decimal(repr(value)).quantize(Decimal("0.01"))


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0, "positive"),
        (-1.5, "positive"),
        (190.001, "at most 2 decimals"),
        ("190.50", "finite number"),
        (None, "finite number"),
        (True, "finite number"),
        (float("inf"), "finite number"),
        # No float holds it, and the decimal context has 28 digits: refused, not a crash (500).
        pytest.param(10**400, "finite number", id="a 401-digit integer"),
        (1e300, "too large"),
        pytest.param(10**30, "too large", id="a 31-digit integer"),
    ],
)
def test_anything_else_is_not_a_price(value: object, words: str) -> None:
    with pytest.raises(InvalidValue, match=words):
        as_price(value)
