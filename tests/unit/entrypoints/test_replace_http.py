"""PATCH /orders/{id} in process (chalice.test) with in-memory fakes: the answers, and the replacement's life after."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.domain.model import OrderStatus
from tests.unit.fakes import FakeExchange, Fakes
from tests.unit.helpers import Clock, place
from tests.unit.in_process import app_client, bearer

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

ORDER = {"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": 10, "limit_price": 187.25}


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


def placed_order(client: Any, fakes: Fakes, headers: dict[str, str], **terms: Any) -> dict[str, Any]:
    response = client.http.post("/orders", headers=headers, body=json.dumps({**ORDER, **terms}))
    assert response.status_code == 201, response.body
    place(fakes.orders, response.json_body["id"], FakeExchange())
    return dict(response.json_body)


def patch(client: Any, headers: dict[str, str], order_id: str, body: Any) -> Any:
    return client.http.request("PATCH", f"/orders/{order_id}", headers=headers, body=json.dumps(body).encode())


def test_a_replace_answers_202_with_the_replacement_and_the_original_goes_pending_replace(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        original = placed_order(client, fakes, headers)
        answer = patch(client, headers, original["id"], {"quantity": 20, "limit_price": 186.5})
        read = client.http.get(f"/orders/{original['id']}", headers=headers).json_body
    assert answer.status_code == 202, answer.body
    replacement = answer.json_body
    assert (replacement["status"], replacement["replaces"], replacement["quantity"]) == ("pending", original["id"], 20)
    assert (replacement["limit_price"], replacement["side"], replacement["instrument"]) == (
        186.5,
        "buy",
        ORDER["instrument"],
    )
    assert (read["status"], read["replaced_by"]) == ("pending_replace", replacement["id"])
    assert fakes.queue.sent[-1] == replacement["id"]


def test_a_replace_with_a_client_order_id_is_idempotent_and_a_key_for_other_terms_is_409(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        original = placed_order(client, fakes, headers)
        first = patch(client, headers, original["id"], {"quantity": 20, "client_order_id": "r-1"})
        again = patch(client, headers, original["id"], {"quantity": 20, "client_order_id": "r-1"})
        other = patch(client, headers, original["id"], {"quantity": 30, "client_order_id": "r-1"})
        without_key = patch(client, headers, original["id"], {"quantity": 30})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json_body == first.json_body
    assert other.status_code == 409 and "client_order_id" in other.json_body["message"]
    # Without a key, a repeat meets the pending replace.
    assert without_key.status_code == 409 and "pending_replace" in without_key.json_body["message"]
    assert len([o for o in fakes.orders.orders.values() if o.replaces]) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"quantity": 0}, "quantity"),
        ({}, "body"),
        ({"limit_price": None}, "body"),
        ({"side": "sell"}, "side"),
        ({"stop_price": 180}, "stop_price"),  # a limit order takes none
        ({"time_in_force": "gtd"}, "expires_at"),
        ({"time_in_force": "gtd", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"limit_price": 1.001}, "limit_price"),
    ],
)
def test_invalid_changes_are_422_naming_the_field_and_change_nothing(fakes: Fakes, body: Any, field: str) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        original = placed_order(client, fakes, headers)
        answer = patch(client, headers, original["id"], body)
        read = client.http.get(f"/orders/{original['id']}", headers=headers).json_body
    assert answer.status_code == 422, answer.body
    assert field in [error["field"] for error in answer.json_body["errors"]]
    assert read["status"] == "placed"


def test_a_quantity_not_above_the_filled_one_is_422(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        original = placed_order(client, fakes, headers)
        stored = fakes.orders.orders[original["id"]]
        fakes.orders.orders[original["id"]] = dataclasses.replace(
            stored, status=OrderStatus.PARTIALLY_FILLED, filled_quantity=6
        )
        answer = patch(client, headers, original["id"], {"quantity": 6})
    assert answer.status_code == 422
    assert answer.json_body["errors"][0]["message"].startswith("quantity must be above the 6 already filled")


def test_orders_that_cannot_be_replaced_are_409_and_other_accounts_orders_404(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers, theirs = bearer(fakes, "acme"), bearer(fakes, "other")
        pending = client.http.post("/orders", headers=headers, body=json.dumps(ORDER)).json_body
        canceled = placed_order(client, fakes, headers)
        client.http.delete(f"/orders/{canceled['id']}", headers=headers)  # pending_cancel
        answers = {
            "pending": patch(client, headers, pending["id"], {"quantity": 5}),
            "pending_cancel": patch(client, headers, canceled["id"], {"quantity": 5}),
            "other account": patch(client, theirs, canceled["id"], {"quantity": 5}),
            "malformed id": patch(client, headers, "not-an-id", {"quantity": 5}),
        }
    assert answers["pending"].status_code == 409
    assert "once the exchange has accepted it" in answers["pending"].json_body["message"]
    assert answers["pending_cancel"].status_code == 409
    assert answers["other account"].status_code == 404
    assert answers["malformed id"].status_code == 404


def test_the_confirmed_replace_is_placed_as_a_cancel_replace(fakes: Fakes) -> None:
    exchange = FakeExchange()
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        original = placed_order(client, fakes, headers)
        replacement = patch(client, headers, original["id"], {"quantity": 20}).json_body
        result = place(fakes.orders, replacement["id"], exchange)
        read = client.http.get(f"/orders/{original['id']}", headers=headers).json_body
    assert exchange.calls == [replacement["id"]]
    assert result.order is not None and result.order.status is OrderStatus.PLACED
    # The original stays pending_replace until the exchange's `replaced` report ends it.
    assert read["status"] == "pending_replace"


def test_a_replace_too_late_rejects_the_replacement_and_hands_the_original_back(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        original = placed_order(client, fakes, headers)
        replacement = patch(client, headers, original["id"], {"quantity": 20}).json_body
        place(fakes.orders, replacement["id"], FakeExchange(script=["too_late"]))
        new = client.http.get(f"/orders/{replacement['id']}", headers=headers).json_body
        old = client.http.get(f"/orders/{original['id']}", headers=headers).json_body
        again = patch(client, headers, original["id"], {"quantity": 30})
    assert (new["status"], new["failure_reason"]) == ("rejected", "too late to replace")
    assert (old["status"], old["replaced_by"]) == ("placed", None)
    assert again.status_code == 202  # the original may be replaced again


def test_a_replacement_canceled_before_it_was_sent_hands_the_original_back(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        original = placed_order(client, fakes, headers)
        replacement = patch(client, headers, original["id"], {"quantity": 20}).json_body
        canceled = client.http.delete(f"/orders/{replacement['id']}", headers=headers)
        old = client.http.get(f"/orders/{original['id']}", headers=headers).json_body
        exchange = FakeExchange()
        place(fakes.orders, replacement["id"], exchange)  # its message still comes: nothing is sent
    assert (canceled.status_code, canceled.json_body["status"]) == (200, "canceled")
    assert (old["status"], old["replaced_by"]) == ("placed", None)
    assert exchange.calls == []


def test_a_replacement_that_never_reached_the_exchange_fails_and_hands_the_original_back(fakes: Fakes) -> None:
    exchange = FakeExchange(script=["unavailable"] * 3)
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        original = placed_order(client, fakes, headers)
        replacement = patch(client, headers, original["id"], {"quantity": 20}).json_body
        clock = Clock(datetime.now(UTC))
        for attempt in (1, 2, 3, 4):
            place(fakes.orders, replacement["id"], exchange, receive_count=attempt, clock=clock)
            clock.now += timedelta(hours=1)
        new = fakes.orders.orders[replacement["id"]]
        old = client.http.get(f"/orders/{original['id']}", headers=headers).json_body
    assert new.status is OrderStatus.FAILED
    assert (old["status"], old["replaced_by"]) == ("placed", None)


def test_a_replacement_canceled_while_its_replace_was_at_the_exchange_ends_rejected_when_too_late(
    fakes: Fakes,
) -> None:
    exchange = FakeExchange(script=["too_late"])
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        original = placed_order(client, fakes, headers)
        replacement = patch(client, headers, original["id"], {"quantity": 20}).json_body
        # The client cancels the replacement while its placement attempt is at the exchange.
        exchange.during_place.append(lambda: client.http.delete(f"/orders/{replacement['id']}", headers=headers))
        place(fakes.orders, replacement["id"], exchange, clock=Clock(datetime.now(UTC)))
        new = client.http.get(f"/orders/{replacement['id']}", headers=headers).json_body
        old = client.http.get(f"/orders/{original['id']}", headers=headers).json_body
    # "Too late" is final: nothing is left for the cancel to ask the exchange.
    assert (new["status"], new["failure_reason"]) == ("rejected", "too late to replace")
    assert (old["status"], old["replaced_by"]) == ("placed", None)


def test_too_late_after_an_unanswered_attempt_asks_the_exchange_which_holds_the_replacement(fakes: Fakes) -> None:
    # The first attempt got through and its answer was lost; a venue that checks the original before
    # duplicates then answers the retry "too late": the exchange's status of the replacement decides.
    exchange = FakeExchange(script=["lost", "too_late"])
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        original = placed_order(client, fakes, headers)
        replacement = patch(client, headers, original["id"], {"quantity": 20}).json_body
        clock = Clock(datetime.now(UTC))
        place(fakes.orders, replacement["id"], exchange, receive_count=1, clock=clock)
        clock.now += timedelta(hours=1)
        result = place(fakes.orders, replacement["id"], exchange, receive_count=2, clock=clock)
        old = client.http.get(f"/orders/{original['id']}", headers=headers).json_body
    assert result.order is not None and result.order.status is OrderStatus.PLACED
    assert exchange.status_calls == [replacement["id"]]
    assert (old["status"], old["replaced_by"]) == ("pending_replace", replacement["id"])
