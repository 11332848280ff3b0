"""DELETE /orders and GET /orders/by-client-order-id/{key} in process (chalice.test) with in-memory fakes."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from openapi_schema_validator import OAS30Validator

from chalicelib.domain.accounts import KeyScope
from chalicelib.domain.model import OrderStatus
from chalicelib.entrypoints.openapi import openapi_document
from chalicelib.service.accounts import create_api_key
from tests.unit.fakes import FakeExchange, Fakes
from tests.unit.helpers import place
from tests.unit.in_process import app_client, bearer

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
ORDER = {"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": 10, "limit_price": 187.25}


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


def create(client: Any, headers: dict[str, str], key: str | None = None) -> dict[str, Any]:
    body = {**ORDER, **({"client_order_id": key} if key is not None else {})}
    response = client.http.post("/orders", headers=headers, body=json.dumps(body))
    assert response.status_code == 201, response.body
    return dict(response.json_body)


def conforms(component: str, body: Any) -> list[Any]:
    document = openapi_document()
    validator = OAS30Validator({"$ref": f"#/components/schemas/{component}", "components": document["components"]})
    return list(validator.iter_errors(body))


def read_only(fakes: Fakes, account_id: str) -> dict[str, str]:
    key = create_api_key(account_id, None, fakes.api_keys, scope=KeyScope.READ).plaintext
    return {"Authorization": f"Bearer {key}"}


# --- DELETE /orders ------------------------------------------------------------------------------


def test_cancel_all_answers_207_with_each_orders_own_status_and_leaves_other_accounts_alone(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        mine, theirs = bearer(fakes, "acme"), bearer(fakes, "other")
        never_sent, live, their_order = create(client, mine), create(client, mine), create(client, theirs)
        place(fakes.orders, live["id"], FakeExchange())
        answer = client.http.delete("/orders", headers=mine)
        again = client.http.delete("/orders", headers=mine)
    assert answer.status_code == 207, answer.body
    body = answer.json_body
    assert not conforms("CancelAllResponse", body)
    results = {result["id"]: result for result in body["results"]}
    assert (body["more"], body["next"]) == (False, None)
    assert set(results) == {never_sent["id"], live["id"]}
    assert (results[never_sent["id"]]["status"], results[never_sent["id"]]["order"]["status"]) == (200, "canceled")
    assert (results[live["id"]]["status"], results[live["id"]]["order"]["status"]) == (202, "pending_cancel")
    assert all(result["message"] is None for result in body["results"])
    assert answer.headers["X-Correlation-Id"]
    assert fakes.orders.orders[their_order["id"]].status is OrderStatus.PENDING
    assert fakes.queue.cancels == [live["id"]]
    # Again: the pending_cancel one answers 202 as DELETE /orders/{id} would, without a new request.
    assert again.status_code == 207
    assert [(r["id"], r["status"]) for r in again.json_body["results"]] == [(live["id"], 202)]
    assert fakes.queue.cancels == [live["id"]]


def test_with_no_open_orders_the_answer_is_207_and_empty(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        answer = client.http.delete("/orders", headers=bearer(fakes, "acme"))
    assert (answer.status_code, answer.json_body) == (207, {"results": [], "more": False, "next": None})


def test_a_read_only_key_may_not_cancel_all(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        order = create(client, bearer(fakes, "acme"))
        refused = client.http.delete("/orders", headers=read_only(fakes, "acme"))
    assert refused.status_code == 403
    assert set(refused.json_body) == {"message"}
    assert fakes.orders.orders[order["id"]].status is OrderStatus.PENDING


@pytest.mark.parametrize(
    ("query", "field"),
    [("?after=nope", "after"), ("?colour=red", "colour"), (f"?after={UNKNOWN_ID}&after={UNKNOWN_ID}", "after")],
)
def test_a_bad_query_is_422_naming_the_parameter(fakes: Fakes, query: str, field: str) -> None:
    with app_client(fakes) as client:
        answer = client.http.delete(f"/orders{query}", headers=bearer(fakes, "acme"))
    assert answer.status_code == 422, answer.body
    assert field in [error["field"] for error in answer.json_body["errors"]]


def test_after_goes_on_past_the_given_order(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        ids = sorted(create(client, headers)["id"] for _ in range(3))
        answer = client.http.delete(f"/orders?after={ids[0]}", headers=headers)
    assert [result["id"] for result in answer.json_body["results"]] == ids[1:]
    assert fakes.orders.orders[ids[0]].status is OrderStatus.PENDING


def test_cancel_all_is_503_when_the_open_orders_cannot_be_read(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        create(client, headers)
        fakes.orders.down = True
        answer = client.http.delete("/orders", headers=headers)
    assert answer.status_code == 503
    assert not conforms("ErrorResponse", answer.json_body)


# --- GET /orders/by-client-order-id/{client_order_id} -------------------------------------------


@pytest.mark.parametrize("key", ["my-key-1", "with space/slash%percent?#", "caf\u00e9 \u6771\u4eac"])
def test_the_callers_order_is_found_by_its_client_order_id_percent_encoded(fakes: Fakes, key: str) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        order = create(client, headers, key)
        found = client.http.get(f"/orders/by-client-order-id/{quote(key, safe='')}", headers=headers)
        by_read_key = client.http.get(
            f"/orders/by-client-order-id/{quote(key, safe='')}", headers=read_only(fakes, "acme")
        )
    assert found.status_code == 200, found.body
    assert found.json_body == order | {"updated_at": found.json_body["updated_at"]}
    assert not conforms("OrderResponse", found.json_body)
    assert by_read_key.status_code == 200


def test_another_accounts_key_or_an_unknown_one_is_404(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        create(client, bearer(fakes, "other"), "their-key")
        headers = bearer(fakes, "acme")
        theirs = client.http.get("/orders/by-client-order-id/their-key", headers=headers)
        unknown = client.http.get("/orders/by-client-order-id/no-such-key", headers=headers)
    assert (
        (theirs.status_code, theirs.json_body)
        == (unknown.status_code, unknown.json_body)
        == (
            404,
            {"message": "Order not found"},
        )
    )


@pytest.mark.parametrize(
    ("encoded", "fragment"),
    [
        ("k" * 49, "at most 48 characters"),
        ("bad%00key", "U+0000"),
        ("rtl%E2%80%AEkey", "U+202E"),
        ("e%CC%81", "normalization form C"),
        ("not-utf8-%FF", "percent-encoded UTF-8"),
    ],
)
def test_a_client_order_id_create_would_refuse_is_422_saying_why(fakes: Fakes, encoded: str, fragment: str) -> None:
    with app_client(fakes) as client:
        answer = client.http.get(f"/orders/by-client-order-id/{encoded}", headers=bearer(fakes, "acme"))
    assert answer.status_code == 422, answer.body
    assert answer.json_body["errors"][0]["field"] == "client_order_id"
    assert fragment in answer.json_body["message"]
    assert not conforms("ValidationErrorResponse", answer.json_body)


def test_lookup_is_503_when_storage_is_down(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        fakes.orders.down = True
        answer = client.http.get("/orders/by-client-order-id/k-1", headers=headers)
    assert answer.status_code == 503
    assert set(answer.json_body) == {"message"}
