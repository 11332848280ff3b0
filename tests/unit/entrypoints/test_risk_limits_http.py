"""POST /orders over the account's risk limits, in process with fakes: 422 naming the limit, 503 without a price."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.domain.risk import RiskLimits
from tests.unit.fakes import FakeReferencePrices, Fakes
from tests.unit.in_process import app_client, bearer

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

LOW = RiskLimits(max_order_notional=Decimal("1000"), max_open_orders=1, max_order_quantity=20)
ORDER = {"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": 10, "limit_price": 100}


def post(fakes: Fakes, body: dict[str, Any]) -> Any:
    with app_client(fakes) as client:
        return client.http.post("/orders", headers=bearer(fakes, "acme"), body=json.dumps(body))


def test_a_refusal_is_422_naming_the_limit_and_both_values_and_stores_nothing() -> None:
    fakes = Fakes(risk_defaults=LOW)
    answer = post(fakes, {**ORDER, "limit_price": 100.5})
    assert answer.status_code == 422
    message = answer.json_body["message"]
    assert "max_order_notional of 1000" in message and "notional 1005.0" in message
    assert answer.json_body["errors"] == [{"field": "quantity", "message": message}]
    assert fakes.orders.orders == {} and fakes.queue.sent == []


def test_a_market_order_without_a_reference_price_is_503_saying_why() -> None:
    fakes = Fakes(risk_defaults=LOW, reference_prices=FakeReferencePrices(default=None))
    answer = post(fakes, {"type": "market", "side": "buy", "instrument": "US0378331005", "quantity": 1})
    assert answer.status_code == 503
    assert "reference price" in answer.json_body["message"]
    # A fixed reason: the adapter's detail (the venue's answer) is for the log only.
    assert "no reference price of" not in answer.json_body["message"]
    assert fakes.orders.orders == {}


def test_within_the_limits_it_is_201() -> None:
    fakes = Fakes(risk_defaults=LOW)
    assert post(fakes, ORDER).status_code == 201
    assert post(fakes, ORDER).status_code == 422  # the second open order: max_open_orders 1
