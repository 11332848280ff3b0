"""Order terms over HTTP against the running stack: each kind of order (gtd, stop, stop_limit, ioc) is created and
echoed by POST and GET, and each invalid combination is a 422 naming its field. Only the API's side is asserted:
what the exchange then does with these orders is the simulator's tests' (its outcome does not change the echo)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from devstack.stack import LocalStack
from tests.e2e.helpers import auth

# moto_only: only the API's echo and 422s of order terms; the emulator is only storage.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]

ISIN = "US0378331005"
TERMS = ("type", "time_in_force", "expires_at", "stop_price", "limit_price")


def in_a_day() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "limit", "side": "buy", "instrument": ISIN, "quantity": 2, "limit_price": 10}
    body.update(changes)
    return {name: value for name, value in body.items() if value is not ...}  # ... = leave the field out


def post(stack: LocalStack, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{stack.api_url}/orders", json=body, headers=auth(stack.api_key), timeout=30)


def get(stack: LocalStack, order_id: str) -> dict[str, Any]:
    response = requests.get(f"{stack.api_url}/orders/{order_id}", headers=auth(stack.api_key), timeout=30)
    assert response.status_code == 200
    return dict(response.json())


def test_each_kind_of_order_is_created_and_echoed(stack: LocalStack) -> None:
    expires_at = in_a_day()
    kinds = {
        "gtd": (
            order(time_in_force="gtd", expires_at=expires_at),
            {
                "type": "limit",
                "time_in_force": "gtd",
                "expires_at": expires_at.replace("Z", ".000Z"),
                "stop_price": None,
            },
        ),
        "stop": (
            order(type="stop", limit_price=..., stop_price=500.25, time_in_force="gtc"),
            {"type": "stop", "time_in_force": "gtc", "expires_at": None, "stop_price": 500.25, "limit_price": None},
        ),
        "stop_limit": (
            order(type="stop_limit", side="sell", stop_price=1.5, limit_price=1.25),
            {"type": "stop_limit", "time_in_force": "day", "expires_at": None, "stop_price": 1.5, "limit_price": 1.25},
        ),
        "ioc": (
            order(time_in_force="ioc"),
            {"type": "limit", "time_in_force": "ioc", "expires_at": None, "stop_price": None, "limit_price": 10.0},
        ),
    }
    created_ids = []
    for kind, (body, expected) in kinds.items():
        response = post(stack, {**body, "client_order_id": f"terms-{kind}-{uuid.uuid4().hex[:8]}"})
        assert response.status_code == 201, (kind, response.text)
        created = response.json()
        created_ids.append(created["id"])
        assert {name: created[name] for name in expected} == expected, kind
        # Read back from the table: the same terms, whatever the exchange made of the order meanwhile.
        assert {name: get(stack, created["id"])[name] for name in TERMS} == {name: created[name] for name in TERMS}
        # The same key and terms again: the same order, not a second one.
        replay = post(stack, {**body, "client_order_id": created["client_order_id"]})
        assert (replay.status_code, replay.json()["id"]) == (200, created["id"])
    for order_id in created_ids:  # leave no open order to the account's other tests
        requests.delete(f"{stack.api_url}/orders/{order_id}", headers=auth(stack.api_key), timeout=30)


def test_a_repeated_client_order_id_with_another_time_in_force_is_409(stack: LocalStack) -> None:
    key = f"terms-conflict-{uuid.uuid4().hex[:8]}"
    first = post(stack, order(client_order_id=key, time_in_force="gtc"))
    assert first.status_code == 201
    assert post(stack, order(client_order_id=key, time_in_force="day")).status_code == 409
    requests.delete(f"{stack.api_url}/orders/{first.json()['id']}", headers=auth(stack.api_key), timeout=30)


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        (order(instrument="US0378331006"), "instrument", "not a valid ISIN: its check digit"),
        (order(time_in_force="gtd"), "expires_at", "required for time_in_force gtd"),
        (order(time_in_force="gtd", expires_at="2030-01-01T15:00:00"), "expires_at", "UTC offset"),
        (order(time_in_force="gtd", expires_at="2020-01-01T15:00:00Z"), "expires_at", "in the future"),
        (order(time_in_force="gtd", expires_at="2099-01-01T15:00:00Z"), "expires_at", "at most 90 days ahead"),
        (order(time_in_force="gtc", expires_at="2030-01-01T15:00:00Z"), "expires_at", "absent or null"),
        (order(type="stop", limit_price=...), "stop_price", "required for type stop"),
        (order(type="stop", stop_price=5), "limit_price", "absent or null for type stop"),
        (order(type="stop_limit", limit_price=..., stop_price=5), "limit_price", "required for type stop_limit"),
        (order(stop_price=5), "stop_price", "absent or null for type limit"),
        (order(type="stop", limit_price=..., stop_price=5.001), "stop_price", "at most 2 decimal places"),
        (order(type="stop", limit_price=..., stop_price=0), "stop_price", "greater than 0"),
        (order(type="stop", limit_price=..., stop_price=5, time_in_force="ioc"), "time_in_force", "cannot be used"),
        (order(type="stop_limit", stop_price=5, time_in_force="fok"), "time_in_force", "cannot be used"),
    ],
)
def test_invalid_terms_are_422_naming_the_field(
    stack: LocalStack, body: dict[str, Any], field: str, fragment: str
) -> None:
    response = post(stack, body)
    assert response.status_code == 422
    errors = {error["field"]: error["message"] for error in response.json()["errors"]}
    assert fragment in errors[field], errors
