"""One error shape: what Chalice answers by itself comes out as {"message": ...} like every other error of ours."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chalice.app import Request, Response
from chalice.test import Client

from app import create_app
from chalicelib.config import Settings
from chalicelib.entrypoints import error_shape
from chalicelib.service.dependencies import Dependencies
from tests.unit.fakes import Fakes
from tests.unit.in_process import app_client, bearer

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

ORDER = json.dumps({"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": 1, "limit_price": 1.5})


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"]
)
def test_a_body_that_is_not_json_by_its_content_type_is_our_415_naming_the_header(
    fakes: Fakes, content_type: str
) -> None:
    with app_client(fakes) as client:
        headers = {**bearer(fakes, "acme"), "Content-Type": content_type}
        answer = client.http.post("/orders", headers=headers, body=ORDER)
    assert answer.status_code == 415
    assert list(answer.json_body) == ["message"]
    message = answer.json_body["message"]
    assert message.startswith("Content-Type must be application/json, not ")
    assert repr(content_type) in message
    assert "'Content-Type: application/json'" in message
    assert fakes.orders.orders == {}


@pytest.mark.parametrize("content_type", [None, "application/json", "application/json; charset=utf-8"])
def test_json_or_no_content_type_at_all_is_read_as_json(fakes: Fakes, content_type: str | None) -> None:
    with app_client(fakes) as client:
        headers = {key: value for key, value in bearer(fakes, "acme").items() if key != "Content-Type"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        answer = client.http.post("/orders", headers=headers, body=ORDER)
    assert answer.status_code == 201, answer.body


def test_a_method_no_route_has_is_our_405_with_the_allowed_ones(fakes: Fakes) -> None:
    with app_client(fakes) as client:
        answer = client.http.request("PUT", "/orders", headers=bearer(fakes, "acme"), body=ORDER.encode())
    assert answer.status_code == 405
    assert answer.json_body == {"message": "Method 'PUT' is not allowed on this path; allowed: POST, GET, DELETE"}
    assert answer.headers["Allow"] == "POST, GET, DELETE"


def test_an_exception_in_a_route_is_our_500(fakes: Fakes) -> None:
    asked: list[int] = []

    def broken_after_the_authorizer() -> Dependencies:
        asked.append(1)
        if len(asked) > 1:  # the authorizer's call works, the route's fails
            raise RuntimeError("a bug")
        return fakes.dependencies()

    with Client(create_app(broken_after_the_authorizer, Settings())) as client:
        answer = client.http.get("/orders", headers=bearer(fakes, "acme"))
    assert answer.status_code == 500
    assert answer.json_body == {"message": "Internal server error"}


def request() -> Request:
    return Request(
        {
            "multiValueQueryStringParameters": None,
            "headers": {"content-type": "text/plain"},
            "pathParameters": None,
            "requestContext": {"httpMethod": "POST", "resourcePath": "/orders"},
            "body": None,
            "stageVariables": None,
        }
    )


def test_an_exception_in_an_inner_middleware_is_our_500_too() -> None:
    def failing(_: Request) -> Response:
        raise RuntimeError("a bug in a middleware")

    answer = error_shape.with_our_error_shape(request(), failing)
    assert (answer.status_code, answer.body) == (500, {"message": "Internal server error"})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"message": "ours already"}, {"message": "ours already"}),
        ({"Code": "BadRequest", "Message": "no Accept"}, {"message": "no Accept"}),
        ({"Code": "X", "Message": "m", "extra": 1}, {"Code": "X", "Message": "m", "extra": 1}),  # not Chalice's
        ("text", "text"),
    ],
)
def test_only_chalices_own_error_bodies_are_rewritten(body: Any, expected: Any) -> None:
    answer = error_shape.with_our_error_shape(request(), lambda _: Response(body=body, status_code=400))
    assert answer.body == expected


def test_an_unprintable_or_long_content_type_is_not_echoed() -> None:
    chalice_415 = Response(body={"Code": "UnsupportedMediaType", "Message": "m"}, status_code=415)
    long = request()
    long.headers = {"content-type": "x/" + "y" * 200}  # type: ignore[assignment]
    message = error_shape.with_our_error_shape(long, lambda _: chalice_415).body["message"]
    assert "yyy" not in message
    assert "too long or unprintable" in message
