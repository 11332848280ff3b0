"""The HTTP API's status codes, in process through chalice.test with in-memory fakes: what each outcome answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chalice.app import Request

from chalicelib.adapters.queue import placement_message
from chalicelib.entrypoints import http
from chalicelib.entrypoints.json_body import MAX_BODY_BYTES
from tests.unit.fakes import Fakes
from tests.unit.in_process import app_client, bearer, sqs_event

# The routes flush metrics after every request; with none recorded Powertools warns, which says nothing here.
pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

ORDER = {"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": 10, "limit_price": 187.25}
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


def post(client: Any, headers: dict[str, str], body: dict[str, Any] | str) -> Any:
    return client.http.post("/orders", headers=headers, body=body if isinstance(body, str) else json.dumps(body))


def test_a_new_order_is_201_and_the_same_key_again_is_200_with_the_same_order(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        created = post(client, headers, {**ORDER, "client_order_id": "k-1"})
        again = post(client, headers, {**ORDER, "client_order_id": "k-1"})
    assert created.status_code == 201
    assert created.json_body["status"] == "pending"
    assert again.status_code == 200
    assert again.json_body["id"] == created.json_body["id"]
    assert fakes.queue.sent == [created.json_body["id"]]


def test_the_same_key_with_other_terms_is_409(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        post(client, headers, {**ORDER, "client_order_id": "k-1"})
        conflict = post(client, headers, {**ORDER, "client_order_id": "k-1", "quantity": 11})
    assert conflict.status_code == 409
    assert "k-1" in conflict.json_body["message"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ('{"type": "limit",', 400),  # not JSON
        ('{"quantity": 1, "quantity": 2}', 400),  # a duplicate key
        ("x" * (MAX_BODY_BYTES + 1), 413),
        (json.dumps({**ORDER, "quantity": 0}), 422),
        (json.dumps({**ORDER, "colour": "red"}), 422),
    ],
    ids=["malformed", "duplicate-key", "too-large", "zero-quantity", "unknown-field"],
)
def test_a_bad_body_is_refused_with_its_status_and_stores_nothing(fakes: Fakes, body: str, status: int) -> None:
    with app_client(fakes) as client:
        answer = post(client, bearer(fakes, "acme"), body)
    assert answer.status_code == status
    assert "message" in answer.json_body or "errors" in answer.json_body
    assert fakes.orders.orders == {}
    assert fakes.queue.sent == []


def test_a_body_that_is_not_json_by_its_content_type_is_415(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = {**bearer(fakes, "acme"), "Content-Type": "text/plain"}
        answer = post(client, headers, ORDER)
    assert answer.status_code == 415
    assert fakes.orders.orders == {}


def test_without_a_key_the_gateway_answers_401_before_any_route(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        answer = client.http.get("/orders")
    assert answer.status_code == 401
    assert fakes.api_keys.reads == 0


def test_a_route_the_authorizer_did_not_name_an_account_for_is_401() -> None:
    # A deployment mistake (a route without the authorizer): answered like a missing key.
    event = {
        "headers": {},
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "requestContext": {"httpMethod": "GET", "resourcePath": "/orders"},  # no "authorizer"
        "body": None,
        "stageVariables": None,
    }
    request = Request(event)
    dependencies = Fakes().dependencies()
    for answer in (
        http.post_order(request, dependencies),
        http.list_orders(request, dependencies),
        http.get_order(request, UNKNOWN_ID, dependencies),
        http.cancel_order(request, UNKNOWN_ID, dependencies),
        http.get_executions(request, UNKNOWN_ID, dependencies),
    ):
        assert answer.status_code == 401
        assert answer.body == http.NO_ACCOUNT_BODY


def test_an_unknown_a_malformed_and_another_accounts_order_are_all_404(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        theirs = post(client, bearer(fakes, "other"), ORDER).json_body["id"]
        mine = bearer(fakes, "acme")
        for order_id in (UNKNOWN_ID, "not-an-id", theirs):
            for path in (f"/orders/{order_id}", f"/orders/{order_id}/executions"):
                assert client.http.get(path, headers=mine).status_code == 404, path
            assert client.http.delete(f"/orders/{order_id}", headers=mine).status_code == 404, order_id
    assert fakes.orders.orders[theirs].status.value == "pending"


def test_a_cancel_is_200_if_never_sent_202_while_the_exchange_is_asked_and_409_once_done(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        never_sent = post(client, headers, ORDER).json_body["id"]
        placed = post(client, headers, ORDER).json_body["id"]
        client.lambda_.invoke("place_orders", sqs_event(client, [placement_message(placed)]))
        canceled = client.http.delete(f"/orders/{never_sent}", headers=headers)
        pending_cancel = client.http.delete(f"/orders/{placed}", headers=headers)
        done = client.http.delete(f"/orders/{never_sent}", headers=headers)
    assert (canceled.status_code, canceled.json_body["status"]) == (200, "canceled")
    assert (pending_cancel.status_code, pending_cancel.json_body["status"]) == (202, "pending_cancel")
    assert fakes.queue.cancels == [placed]
    assert done.status_code == 409
    assert done.json_body == {"message": "Order is canceled and can no longer be canceled"}


def test_reads_and_lists_are_200(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        order_id = post(client, headers, ORDER).json_body["id"]
        read = client.http.get(f"/orders/{order_id}", headers=headers)
        executions = client.http.get(f"/orders/{order_id}/executions", headers=headers)
        listed = client.http.get("/orders?status=open&limit=1", headers=headers)
    assert (read.status_code, read.json_body["id"]) == (200, order_id)
    assert executions.status_code == 200
    assert (listed.status_code, [o["id"] for o in listed.json_body["orders"]]) == (200, [order_id])


def test_an_invalid_list_query_is_422_naming_the_parameter(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        answer = client.http.get("/orders?limit=0&colour=red", headers=bearer(fakes, "acme"))
    assert answer.status_code == 422
    assert {"limit", "colour"} <= {error["field"] for error in answer.json_body["errors"]}


def test_storage_down_is_500_for_a_create_and_503_for_everything_else(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        order_id = post(client, headers, ORDER).json_body["id"]
        fakes.orders.down = True
        create = post(client, headers, ORDER)
        others = [
            client.http.get(f"/orders/{order_id}", headers=headers),
            client.http.get(f"/orders/{order_id}/executions", headers=headers),
            client.http.get("/orders", headers=headers),
            client.http.delete(f"/orders/{order_id}", headers=headers),
        ]
    assert create.status_code == 500
    assert create.json_body == http.STORE_FAILED_BODY
    assert [answer.status_code for answer in others] == [503, 503, 503, 503]
    assert all(answer.json_body == http.UNAVAILABLE_BODY for answer in others)


def test_the_queue_down_still_answers_201(fakes: Fakes) -> None:
    fakes.queue.down = True
    with app_client(fakes) as client:
        created = post(client, bearer(fakes, "acme"), ORDER)
    assert created.status_code == 201
    assert created.json_body["id"] in fakes.orders.orders  # the sweep sends its placement
