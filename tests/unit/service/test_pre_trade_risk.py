"""Creating an order under the account's pre-trade risk limits, with in-memory fakes; and the limits' cache."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal

import pytest

from chalicelib.adapters.accounts_table import CachedAccountLimits
from chalicelib.adapters.reference_prices import ReferencePriceUnavailable
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.model import IdempotencyConflict, OrderStatus, OrderTerms, OrderType, Side
from chalicelib.domain.risk import AccountLimits, RiskLimitExceeded, RiskLimits
from chalicelib.service.client_orders import CreatedOrder, create_order
from tests.unit.fakes import FakeAccountLimits, FakeReferencePrices, Fakes
from tests.unit.helpers import APPLE, Clock

pytestmark = pytest.mark.unit

ACCOUNT = "acct-risk"
DEFAULTS = RiskLimits(max_order_notional=Decimal("10000"), max_open_orders=3, max_order_quantity=500)


def world(reference_prices: FakeReferencePrices | None = None) -> Fakes:
    return Fakes(clock=Clock(), risk_defaults=DEFAULTS, reference_prices=reference_prices or FakeReferencePrices())


def post(fakes: Fakes, terms: OrderTerms, account: str = ACCOUNT) -> CreatedOrder:
    return create_order(account, terms, fakes.dependencies(), correlation_id=str(uuid.uuid4()))


def limit(quantity: int = 10, price: str = "100", key: str | None = None) -> OrderTerms:
    return OrderTerms(OrderType.LIMIT, Side.BUY, APPLE, quantity, Decimal(price), key)


def market(quantity: int = 10, key: str | None = None) -> OrderTerms:
    return OrderTerms(OrderType.MARKET, Side.BUY, APPLE, quantity, None, key)


def refused(fakes: Fakes, terms: OrderTerms) -> RiskLimitExceeded:
    stored_before = dict(fakes.orders.orders)
    with pytest.raises(RiskLimitExceeded) as refusal:
        post(fakes, terms)
    assert fakes.orders.orders == stored_before, "a refused order must not be stored"
    assert fakes.queue.sent == [order_id for order_id in fakes.queue.sent if order_id in stored_before]
    return refusal.value


def test_orders_within_the_limits_are_created() -> None:
    fakes = world()
    assert post(fakes, limit(quantity=100, price="100")).created  # notional exactly at the limit
    assert post(fakes, market(quantity=100)).created  # 100 x reference 100


def test_each_limit_refuses_naming_itself() -> None:
    fakes = world()
    assert refused(fakes, limit(quantity=501, price="1")).limit == "max_order_quantity"
    assert refused(fakes, limit(quantity=101, price="100")).limit == "max_order_notional"
    notional = refused(fakes, market(quantity=101))
    assert notional.limit == "max_order_notional" and "reference price 100" in str(notional)
    for _ in range(3):
        post(fakes, limit())
    assert refused(fakes, limit()).limit == "max_open_orders"


def test_the_account_s_own_limits_replace_the_defaults() -> None:
    fakes = world()
    fakes.account_limits.set(ACCOUNT, AccountLimits(max_order_notional=Decimal("1000000"), max_open_orders=10))
    assert post(fakes, limit(quantity=500, price="1000")).created
    other = post(fakes, limit(quantity=10, price="1000"), account="someone-else")  # defaults still apply there
    assert other.created is True
    with pytest.raises(RiskLimitExceeded, match="max_order_notional of 10000"):
        post(fakes, limit(quantity=11, price="1000"), account="someone-else")


def test_closed_orders_do_not_count_as_open() -> None:
    fakes = world()
    ids = [post(fakes, limit()).order.id for _ in range(3)]
    first = fakes.orders.orders[ids[0]]
    fakes.orders.orders[ids[0]] = dataclasses.replace(first, status=OrderStatus.CANCELED)
    assert post(fakes, limit()).created


def test_a_market_order_without_a_reference_price_is_refused_and_a_limit_order_never_asks() -> None:
    fakes = world(reference_prices=FakeReferencePrices(default=None))
    with pytest.raises(ReferencePriceUnavailable):
        post(fakes, market())
    assert fakes.orders.orders == {}
    assert post(fakes, limit()).created
    assert fakes.reference_prices.asked == [APPLE]  # only the market order asked


def test_unreadable_limits_refuse_the_order() -> None:
    fakes = world()
    fakes.account_limits.down = True
    with pytest.raises(StorageUnavailable):
        post(fakes, limit())
    assert fakes.orders.orders == {}


def test_an_idempotent_retry_gets_its_order_back_even_over_the_open_orders_limit() -> None:
    fakes = world()
    first = post(fakes, limit(key="k-1"))
    post(fakes, limit(key="k-2"))
    post(fakes, limit(key="k-3"))  # now at max_open_orders, k-1 among them
    again = post(fakes, limit(key="k-1"))
    assert not again.created and again.order.id == first.order.id
    assert len(fakes.orders.orders) == 3
    # The same key with other terms is still the conflict it always was, not a limit refusal.
    with pytest.raises(IdempotencyConflict):
        post(fakes, limit(quantity=11, key="k-1"))
    # A new key is refused: the account is at its limit.
    assert refused(fakes, limit(key="k-4")).limit == "max_open_orders"


def test_a_retry_of_an_order_made_before_the_limits_were_lowered_still_gets_it() -> None:
    fakes = world()
    first = post(fakes, market(quantity=50, key="m-1"))
    fakes.account_limits.set(ACCOUNT, AccountLimits(max_order_quantity=10, max_order_notional=Decimal(1)))
    fakes.reference_prices.default = None  # and the venue's price is gone meanwhile
    again = post(fakes, market(quantity=50, key="m-1"))
    assert not again.created and again.order.id == first.order.id


def test_the_open_orders_count_stops_at_the_limit() -> None:
    fakes = world()
    for _ in range(3):
        post(fakes, limit())
    assert fakes.orders.count_open(ACCOUNT, stop_at=2) == 2
    assert fakes.orders.count_open(ACCOUNT, stop_at=10) == 3


def test_limits_are_read_once_per_ttl_per_account() -> None:
    now = [0.0]
    table = FakeAccountLimits()
    cached = CachedAccountLimits(table, ttl_s=30, clock=lambda: now[0])
    table.set("a", AccountLimits(max_open_orders=7))
    assert cached.get("a").max_open_orders == 7
    table.set("a", AccountLimits(max_open_orders=8))  # the operator, from another process
    now[0] = 29.9
    assert cached.get("a").max_open_orders == 7 and table.reads == 1
    now[0] = 30.0
    assert cached.get("a").max_open_orders == 8 and table.reads == 2
    cached.set("a", AccountLimits(max_open_orders=9))  # a write through the cache forgets its copy
    assert cached.get("a").max_open_orders == 9


def test_a_failed_read_is_not_cached() -> None:
    table = FakeAccountLimits()
    cached = CachedAccountLimits(table, ttl_s=30, clock=lambda: 0.0)
    table.down = True
    with pytest.raises(StorageUnavailable):
        cached.get("a")
    table.down = False
    assert cached.get("a") == AccountLimits()
