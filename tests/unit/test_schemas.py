"""The HTTP contract without a server: hostile bodies, response shapes and the OpenAPI document."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec

from chalicelib.adapters.repository import OrderCursor
from chalicelib.domain.model import ExecType, ExecutionReport, Order, OrderStatus, OrderTerms, OrderType, Side
from chalicelib.entrypoints.docs_page import docs_asset, docs_page
from chalicelib.entrypoints.json_body import MAX_BODY_BYTES, MAX_JSON_DEPTH, BadRequest
from chalicelib.entrypoints.openapi import _base_path, openapi_document, openapi_response
from chalicelib.entrypoints.request_models import (
    InvalidOrder,
    InvalidQuery,
    encode_cursor,
    parse_list_query,
    parse_order_request,
)
from chalicelib.entrypoints.response_models import (
    error_body,
    execution_to_json,
    executions_to_json,
    invalid_order_to_json,
    order_to_json,
)

pytestmark = pytest.mark.unit

ISIN = "US0378331005"
T0 = datetime(2024, 5, 2, 14, 3, 7, 250000, tzinfo=UTC)


def order_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "limit", "side": "buy", "instrument": ISIN, "quantity": 10, "limit_price": 187.25}
    body.update(changes)
    return body


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def bad_request(raw_body: bytes) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse_order_request(raw_body)
    return caught.value


def invalid_fields(raw_body: bytes) -> dict[str, str]:
    with pytest.raises(InvalidOrder) as caught:
        parse_order_request(raw_body)
    return {e.field: e.message for e in caught.value.errors}


def test_a_valid_order_parses() -> None:
    terms = parse_order_request(raw(order_body(client_order_id="café order 1 🙂")))
    assert terms.limit_price == Decimal("187.25")
    assert terms.client_order_id == "café order 1 🙂"


# --- bodies that are no JSON object we can read: 400 (or 413), with a message saying why


@pytest.mark.parametrize(
    ("raw_body", "fragment"),
    [
        (b"", "must be a JSON object"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"order"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b"{bad", "not valid JSON"),
        (b'{"quantity": NaN}', "NaN is not a valid JSON number"),
        (b'{"quantity": Infinity}', "Infinity is not a valid JSON number"),
        (b'{"quantity": -Infinity}', "-Infinity is not a valid JSON number"),
        (b'{"type": "limit", "type": "market"}', 'the key "type" more than once'),
        (b'{"a": {"b": 1, "b": 2}}', 'the key "b" more than once'),
        (b'{"type": "limit\xff"}', "not UTF-8"),
        (b'{"type": "\xc0\xaf"}', "not UTF-8"),  # an overlong encoding of "/"
        ('{"type": "limit"}'.encode("utf-16"), "not UTF-8"),
        (b"\xef\xbb\xbf" + raw(order_body()), "BOM"),
        (raw(order_body(client_order_id="\ud800")), "unpaired surrogate \\ud800"),
        (raw({**order_body(), "\udfff": 1}), "unpaired surrogate \\udfff"),
        (raw(order_body(extra=["x", ["\udc00"]])), "unpaired surrogate \\udc00"),
    ],
)
def test_unreadable_bodies_are_400_saying_why(raw_body: bytes, fragment: str) -> None:
    error = bad_request(raw_body)
    assert error.status == 400
    assert fragment in str(error)


def test_a_body_over_the_size_limit_is_413() -> None:
    body = raw(order_body(client_order_id="x")) + b" " * MAX_BODY_BYTES
    error = bad_request(body)
    assert error.status == 413
    assert str(MAX_BODY_BYTES) in str(error)


def test_a_body_at_the_size_limit_is_read() -> None:
    body = raw(order_body())
    terms = parse_order_request(body + b" " * (MAX_BODY_BYTES - len(body)))
    assert terms.quantity == 10


@pytest.mark.parametrize(
    "raw_body",
    [
        b"[" * 8_000 + b"]" * 8_000,
        b'{"a":' * 2_500 + b"1" + b"}" * 2_500,
        b"[" * 10_000,  # unterminated as well
        b'{"type": ' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1) + b"}",
    ],
)
def test_deep_nesting_is_400_without_reaching_the_recursion_limit(raw_body: bytes) -> None:
    error = bad_request(raw_body)
    assert error.status == 400
    assert f"deeper than {MAX_JSON_DEPTH} levels" in str(error)


def test_nesting_up_to_the_limit_is_parsed_and_then_rejected_by_field() -> None:
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    # Brackets inside strings are text, not nesting.
    fields = invalid_fields(f'{{"type": {nested}, "side": "{"[" * 100}"}}'.encode())
    assert set(fields) >= {"type", "side"}


def test_a_valid_surrogate_pair_is_one_character() -> None:
    terms = parse_order_request(
        b'{"type": "market", "side": "buy", "instrument": "US0378331005", "quantity": 1,'
        b' "client_order_id": "key-\\ud83d\\ude42"}'
    )
    assert terms.client_order_id == "key-🙂"


# --- JSON objects with invalid fields: 422 naming each field


@pytest.mark.parametrize(
    ("raw_body", "field", "fragment"),
    [
        (raw(order_body(quantity="10")), "quantity", "must be an integer"),
        (raw(order_body(limit_price="10.5")), "limit_price", "must be a JSON number"),
        (raw(order_body(quantity=True)), "quantity", "must be an integer"),
        (raw(order_body(limit_price=True)), "limit_price", "must be a JSON number"),
        (raw(order_body(quantity=1.0)), "quantity", "must be an integer"),
        (raw(order_body(quantity=[1])), "quantity", "must be an integer"),
        (raw(order_body(quantity={"value": 1})), "quantity", "must be an integer"),
        (raw(order_body(type=None)), "type", "must be one of"),
        (raw(order_body(instrument=12)), "instrument", "must be a string"),
        (raw(order_body(quantity=10**30)), "quantity", "at most 1000000000"),
        (raw(order_body(quantity=10**4000)), "quantity", "at most 32 characters"),
        (raw(order_body(quantity=-(10**30))), "quantity", "greater than 0"),
        (raw(order_body()).replace(b"187.25", b"1e400"), "limit_price", "at most 1000000000"),
        (raw(order_body()).replace(b"187.25", b"1e-400"), "limit_price", "at most 2 decimal places"),
        (raw(order_body(limit_price=[187.25])), "limit_price", "must be a JSON number"),
        (raw(order_body(instrument="US037833100\uff15")), "instrument", "ISIN"),  # a full-width digit
        (raw(order_body(instrument="US037833100\u0000")), "instrument", "ISIN"),
    ],
)
def test_wrong_types_and_out_of_range_numbers_are_422(raw_body: bytes, field: str, fragment: str) -> None:
    fields = invalid_fields(raw_body)
    assert fragment in fields[field]


@pytest.mark.parametrize(
    ("client_order_id", "shown"),
    [
        ("key\u0000one", "U+0000"),
        ("key\u001bone", "U+001B"),
        ("key\u007fone", "U+007F"),
        ("key\u0085one", "U+0085"),
        ("invoice\u202efdp.exe", "U+202E"),  # right-to-left override
        ("key\u2066one\u2069", "U+2066"),  # isolate
        ("key\u200bone", "U+200B"),  # zero-width space
        ("key\u200done", "U+200D"),  # zero-width joiner
        ("\ufeffkey", "U+FEFF"),  # byte order mark
        ("key\u00adone", "U+00AD"),  # soft hyphen
        ("key\u2028one", "U+2028"),  # line separator
        ("key\u00a0one", "U+00A0"),  # no-break space
        ("key\u3000one", "U+3000"),  # ideographic space
        ("key\U000e0041", "U+E0041"),  # tag character
        ("cafe\u0301", "normalization form C"),  # "café" with a combining accent
    ],
)
def test_unicode_tricks_in_the_client_order_id_are_422_naming_the_character(client_order_id: str, shown: str) -> None:
    fields = invalid_fields(raw(order_body(client_order_id=client_order_id)))
    assert set(fields) == {"client_order_id"}
    assert shown in fields["client_order_id"]
    assert "1 to 48" in fields["client_order_id"]


@pytest.mark.parametrize("client_order_id", ["order-1", "order 1", "café", "注文-1", "🙂", "a" * 48])
def test_ordinary_client_order_ids_are_accepted(client_order_id: str) -> None:
    assert parse_order_request(raw(order_body(client_order_id=client_order_id))).client_order_id == client_order_id


def test_unknown_field_names_are_echoed_short_and_escaped() -> None:
    tricky = "\u202e" + "x" * 200
    fields = invalid_fields(raw({**order_body(), tricky: 1, "venue": "XNAS"}))
    assert fields["venue"] == "venue is not a known field"
    (shown,) = set(fields) - {"venue"}
    assert shown.startswith("\\u202exxx")
    assert shown.endswith("...")
    assert len(shown) < 80
    assert shown.isascii()
    assert shown.isprintable()


def test_the_422_body_lists_every_field() -> None:
    with pytest.raises(InvalidOrder) as caught:
        parse_order_request(raw({"type": "limit", "side": "short", "quantity": 0}))
    body = invalid_order_to_json(caught.value)
    assert {e["field"] for e in body["errors"]} == {"side", "instrument", "quantity", "limit_price"}
    assert body["message"].startswith("Invalid order: ")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        JSON_VALUES.map(lambda value: json.dumps(value).encode()),
        st.dictionaries(
            st.sampled_from(["type", "side", "instrument", "quantity", "limit_price", "client_order_id", "x"]),
            JSON_VALUES,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_any_body_is_an_order_or_a_client_error(raw_body: bytes) -> None:
    # Anything else (RecursionError, UnicodeError, a pydantic error) would be a 500.
    with contextlib.suppress(BadRequest, InvalidOrder):
        parse_order_request(raw_body)


# --- responses and the OpenAPI document


def an_order(**changes: Any) -> Order:
    terms = OrderTerms(OrderType.LIMIT, Side.BUY, ISIN, 10, Decimal("187.25"), client_order_id="k-1")
    order = Order.create("acct-1", terms, T0, correlation_id="c-1")
    return order if not changes else Order(**{**order.__dict__, **changes})


def a_report(**changes: Any) -> ExecutionReport:
    fields: dict[str, Any] = {
        "exec_id": "E-1",
        "order_id": an_order().id,
        "exchange_order_id": "X-1",
        "exec_type": ExecType.PARTIAL_FILL,
        "last_qty": 4,
        "last_price": Decimal("187.20"),
        "cum_qty": 4,
        "leaves_qty": 6,
        "avg_price": Decimal("187.20"),
        "transact_time": T0,
        "seq": 1,
    }
    fields.update(changes)
    return ExecutionReport(**fields)


def test_order_json_keeps_the_field_names_and_number_types_clients_rely_on() -> None:
    body = order_to_json(an_order())
    assert body == {
        "id": an_order().id,
        "created_at": "2024-05-02T14:03:07.250Z",
        "updated_at": "2024-05-02T14:03:07.250Z",
        "type": "limit",
        "side": "buy",
        "instrument": ISIN,
        "quantity": 10,
        "limit_price": 187.25,
        "stop_price": None,
        "time_in_force": "day",
        "expires_at": None,
        "client_order_id": "k-1",
        "status": "pending",
        "placed_at": None,
        "failure_reason": None,
        "filled_quantity": 0,
        "remaining_quantity": 10,
        "average_fill_price": None,
        "reopened_at": None,
        "replaces": None,
        "replaced_by": None,
    }
    assert isinstance(body["limit_price"], float)


def test_execution_json_keeps_its_field_names_and_number_types() -> None:
    assert execution_to_json(a_report()) == {
        "id": "E-1",
        "type": "partial_fill",
        "quantity": 4,
        "price": 187.2,
        "time": "2024-05-02T14:03:07.250Z",
        "cumulative_quantity": 4,
        "average_price": 187.2,
    }


def document_validator(component: str) -> OAS30Validator:
    document = openapi_document()
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    return OAS30Validator(schema)


def test_the_openapi_document_is_valid_openapi_3_0() -> None:
    validate_spec(openapi_document())
    assert openapi_document()["openapi"].startswith("3.0.")


def test_every_route_of_the_app_is_documented_with_its_methods() -> None:
    import app

    documented = {(path, method.upper()) for path, item in openapi_document()["paths"].items() for method in item}
    routes = {(path, method) for path, entries in app.app.routes.items() for method in entries}
    assert routes == documented


def test_the_request_body_schema_is_the_models() -> None:
    request = openapi_document()["components"]["schemas"]["OrderRequest"]
    assert request["additionalProperties"] is False
    assert set(request["required"]) == {"type", "side", "instrument", "quantity"}
    assert request["properties"]["limit_price"]["type"] == "number"  # strings are not prices
    assert request["properties"]["limit_price"]["nullable"] is True
    validator = document_validator("OrderRequest")
    assert validator.is_valid(order_body(client_order_id="k-1"))
    assert not validator.is_valid(order_body(limit_price="10.5"))
    assert not validator.is_valid(order_body(client_order_id="a\u202eb"))


@pytest.mark.parametrize(
    "order",
    [
        an_order(),
        an_order(status=OrderStatus.PARTIALLY_FILLED, placed_at=T0, filled_quantity=4, average_fill_price=Decimal("1")),
        an_order(status=OrderStatus.FAILED, failure_reason="exchange unavailable after 3 attempts"),
        Order.create("acct-1", OrderTerms(OrderType.MARKET, Side.SELL, ISIN, 3, None), T0),
    ],
)
def test_order_json_conforms_to_the_documented_schema(order: Order) -> None:
    errors = list(document_validator("OrderResponse").iter_errors(order_to_json(order)))
    assert not errors, errors


def test_executions_json_conforms_to_the_documented_schema() -> None:
    body = executions_to_json(
        an_order().id, [a_report(), a_report(exec_id="E-2", exec_type=ExecType.NEW, last_price=None)]
    )
    assert not list(document_validator("ExecutionListResponse").iter_errors(body))
    assert not list(document_validator("ExecutionListResponse").iter_errors(executions_to_json(an_order().id, [])))


def test_error_bodies_conform_to_the_documented_schemas() -> None:
    with pytest.raises(InvalidOrder) as caught:
        parse_order_request(raw({"type": "stop"}))
    assert not list(document_validator("ValidationErrorResponse").iter_errors(invalid_order_to_json(caught.value)))
    assert not list(document_validator("ErrorResponse").iter_errors(error_body("Order not found")))
    assert not document_validator("ErrorResponse").is_valid({})


def test_the_document_names_where_the_api_is_behind_a_stage() -> None:
    assert _base_path({"path": "/api/openapi.json", "resourcePath": "/openapi.json"}) == "/api"
    assert _base_path({"path": "/openapi.json", "resourcePath": "/openapi.json"}) == ""
    assert _base_path({}) == ""
    served = openapi_response({"path": "/api/openapi.json", "resourcePath": "/openapi.json"}).body
    assert served["servers"] == [{"url": "/api"}]
    assert "servers" not in openapi_document()  # the cached document stays as built


def test_the_docs_page_loads_only_its_own_assets() -> None:
    page = docs_page()
    assert "http" not in page.body.replace("http-equiv", "")  # no absolute URL, so no CDN
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-initializer.js"):
        assert f'"docs/{asset}"' in page.body
        response = docs_asset(asset)
        assert response.status_code == 200
        assert isinstance(response.body, str)
        assert response.body
    assert docs_asset("swagger-ui.css").headers["Content-Type"] == "text/css; charset=utf-8"
    assert docs_asset("swagger-ui-bundle.js").headers["Content-Type"] == "text/javascript; charset=utf-8"


@pytest.mark.parametrize("name", ["../__init__.py", "index.html", "swagger-ui.js.map", "", "%2e%2e"])
def test_other_asset_names_are_404(name: str) -> None:
    assert docs_asset(name).status_code == 404


def test_configured_order_limits_are_422s_that_name_the_bound() -> None:
    from decimal import Decimal

    from chalicelib.entrypoints.request_models import InvalidOrder, OrderLimits, parse_order_request

    limits = OrderLimits(max_quantity=100, max_limit_price=Decimal("50"))
    body = b'{"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": 101, "limit_price": 50.01}'
    with pytest.raises(InvalidOrder) as caught:
        parse_order_request(body, limits)
    errors = {e.field: e.message for e in caught.value.errors}
    assert errors == {
        "quantity": "quantity must be at most 100 (maximum order size)",
        "limit_price": "limit_price must be at most 50 (price sanity bound)",
    }
    within = b'{"type": "limit", "side": "buy", "instrument": "US0378331005", "quantity": 100, "limit_price": 50}'
    assert parse_order_request(within, limits).quantity == 100


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after": ["0001-01-01T00:00:00+01:00"]}, "after"),  # no UTC equivalent
        ({"until": ["9999-12-31T23:59:59.999999-05:00"]}, "until"),
        ({"until": ["0001-01-01T00:00:00Z"]}, "until"),  # one microsecond before it does not exist
        ({"limit": ["1", "2"]}, "limit"),
        ({"next": ["!"]}, "next"),
    ],
)
def test_list_query_problems_are_422s_naming_the_parameter(params: dict[str, list[str]], field: str) -> None:
    with pytest.raises(InvalidQuery) as raised:
        parse_list_query("acct-1", params)
    assert [error.field for error in raised.value.errors] == [field]


def test_a_cursor_round_trips_and_must_lie_inside_the_time_filters() -> None:
    cursor = OrderCursor(created_at=T0, order_id="6f1e4c0a-5a57-4c1b-9a5e-2b7f3d1c9e40")
    text = encode_cursor(cursor)
    assert parse_list_query("acct-1", {"next": [text]}).cursor == cursor
    for outside in ({"after": [T0.isoformat()]}, {"until": [T0.isoformat()]}):
        with pytest.raises(InvalidQuery, match="next belongs to a listing with other after/until filters"):
            parse_list_query("acct-1", {"next": [text], **outside})
    with pytest.raises(InvalidQuery, match="next must be the next value"):
        parse_list_query("acct-1", {"next": [text[:-2]]})
