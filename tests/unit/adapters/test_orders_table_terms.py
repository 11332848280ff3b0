"""The orders table's items and the order terms, without a table: stream images of new terms and of old items."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.adapters.orders_table import OrderRecord, _to_record, order_from_stream_image
from chalicelib.domain.model import Order, OrderTerms, OrderType, Side, TimeInForce
from tests.contracts.order_repository import gtd_stop_limit_terms

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


def image(order: Order) -> dict[str, Any]:
    serialized: dict[str, Any] = _to_record(OrderRecord, order, T0 + timedelta(minutes=1)).serialize()
    return serialized


def test_the_new_terms_are_stored_and_read_back_exactly() -> None:
    terms = gtd_stop_limit_terms()
    order = Order.create("acct-1", terms, T0)
    stored = image(order)
    assert stored["time_in_force"] == {"S": "gtd"}
    assert stored["stop_price"] == {"S": "118.50"}  # a string, exact, like limit_price
    read = order_from_stream_image(OrderRecord, stored)
    assert read.terms == terms
    assert str(read.terms.stop_price) == "118.50"


def test_every_order_stores_its_time_in_force_and_only_what_it_has() -> None:
    order = Order.create("acct-1", OrderTerms(OrderType.MARKET, Side.SELL, "DE0007164600", 1, None), T0)
    stored = image(order)
    assert stored["time_in_force"] == {"S": "day"}
    assert "expires_at" not in stored and "stop_price" not in stored


def test_an_item_stored_before_time_in_force_existed_reads_as_a_day_order() -> None:
    order = Order.create("acct-1", OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", 1, Decimal("5.00")), T0)
    old = {name: value for name, value in image(order).items() if name not in {"time_in_force"}}
    read = order_from_stream_image(OrderRecord, old)
    assert read.terms.time_in_force is TimeInForce.DAY
    assert (read.terms.expires_at, read.terms.stop_price) == (None, None)
    assert read.terms == order.terms
