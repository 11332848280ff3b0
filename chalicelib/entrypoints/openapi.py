"""The OpenAPI document, built from the models that validate requests and shape responses (its page: docs_page.py)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

from chalice.app import Response
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from chalicelib.entrypoints.bulk_cancel import CancelAllQuery, CancelAllResponse
from chalicelib.entrypoints.docs_page import ASSETS
from chalicelib.entrypoints.event_models import OrderEventPage, OrderEventResponse
from chalicelib.entrypoints.event_query import ListEventsQuery, StreamTokenResponse
from chalicelib.entrypoints.execution_query import ListExecutionsQuery
from chalicelib.entrypoints.json_body import MAX_BODY_BYTES
from chalicelib.entrypoints.request_models import (
    CLIENT_ORDER_ID_MAX_LENGTH,
    CLIENT_ORDER_ID_PATTERN,
    ORDER_ID_PATTERN,
    ListOrdersQuery,
    OrderRequest,
)
from chalicelib.entrypoints.response_models import (
    ErrorResponse,
    ExecutionListResponse,
    OrderListResponse,
    OrderResponse,
    ValidationErrorResponse,
)
from chalicelib.service.cancel_all import CANCEL_ALL_MAX_ORDERS

# 3.0, not 3.1: the Swagger UI we serve (4.x, from swagger-ui-bundle) renders
# only 3.0 documents, and 3.0 is what most client generators read best.
OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.0.0"
CORRELATION_HEADER = "X-Correlation-Id"
_SCHEMAS = "#/components/schemas/"

# Request models are described as they validate, response models as they serialize.
_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (OrderRequest, "validation"),
    (OrderResponse, "serialization"),
    (OrderListResponse, "serialization"),
    (ExecutionListResponse, "serialization"),
    (ErrorResponse, "serialization"),
    (ValidationErrorResponse, "serialization"),
    (CancelAllResponse, "serialization"),
    (OrderEventResponse, "serialization"),
    (OrderEventPage, "serialization"),
    (StreamTokenResponse, "serialization"),
]


# The value null alone, in OpenAPI 3.0's dialect (which has no null type).
_NULL_ONLY = {"type": "object", "nullable": True, "enum": [None]}


def _to_openapi_30(schema: Any) -> Any:
    """Pydantic's JSON Schema (2020-12, what OpenAPI 3.1 uses) in OpenAPI 3.0's dialect."""
    if isinstance(schema, list):
        return [_to_openapi_30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted: dict[str, Any] = {
        # "properties" maps field names (not keywords) to schemas.
        key: _schemas_to_openapi_30(value) if key == "properties" else _to_openapi_30(value)
        for key, value in schema.items()
    }
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        # 2020-12: a number; 3.0: a flag on minimum/maximum.
        value = converted.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            converted["minimum" if bound == "exclusiveMinimum" else "maximum"] = value
            converted[bound] = True
    if "const" in converted:
        converted["enum"] = [converted.pop("const")]
    if "examples" in converted:
        examples = converted.pop("examples")
        if examples:
            converted.setdefault("example", examples[0])
    members = converted.get("anyOf")
    if isinstance(members, list) and {"type": "null"} in members:
        # 3.0 has no null type: `X | None` is X with nullable.
        others = [member for member in members if member != {"type": "null"}]
        del converted["anyOf"]
        if len(others) == 1 and "$ref" not in others[0]:
            converted = {**others[0], **converted, "nullable": True}
        else:
            # nullable beside allOf/anyOf admits no null (it only widens a `type` at its own level, and
            # every member must match): null is a member of its own instead.
            converted["anyOf"] = [*others, _NULL_ONLY]
    if "$ref" in converted and len(converted) > 1:
        # 3.0 ignores whatever stands beside a $ref: keep it by wrapping the reference.
        converted["allOf"] = [{"$ref": converted.pop("$ref")}]
    return converted


def _schemas_to_openapi_30(schemas: dict[str, Any]) -> dict[str, Any]:
    return {name: _to_openapi_30(schema) for name, schema in schemas.items()}


def _json_content(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _SCHEMAS + model.__name__}}}


def _response(description: str, model: type[BaseModel], correlated: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json_content(model)}
    if correlated:
        response["headers"] = {
            CORRELATION_HEADER: {
                "description": "The correlation id of this request: the caller's, if it was usable, else a new one."
                " A replay (200) carries the one of the request that created the order.",
                "schema": {"type": "string"},
            }
        }
    return response


_ORDER_ID_PARAMETER = {
    "name": "order_id",
    "in": "path",
    "required": True,
    "description": "An order id as POST /orders returned it; anything else is 404",
    "schema": {"type": "string", "format": "uuid", "pattern": ORDER_ID_PATTERN},
}
_CORRELATION_PARAMETER = {
    "name": CORRELATION_HEADER,
    "in": "header",
    "required": False,
    "description": "Your id for this request, logged with everything it causes and stored with the order."
    " A value not matching the pattern is ignored and a new id is used.",
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"},
}
_NOT_FOUND = _response("No order of yours has this id (or the id is malformed)", ErrorResponse)
_UNAVAILABLE = _response("Storage (of orders or of API keys) is unavailable; retry later", ErrorResponse)
_UNAUTHORIZED = _response("The API key is missing, invalid, revoked or expired", ErrorResponse)
_READ_ONLY_KEY = _response("The API key is read-only (scope read): only GET requests are allowed", ErrorResponse)
_TOO_MANY_REQUESTS = {
    **_response(
        "Too many requests: over your account's rate limit (requests per second and burst, set per"
        " account), or on AWS over the stage's or your address's. Wait Retry-After seconds.",
        ErrorResponse,
    ),
    "headers": {
        "Retry-After": {
            "description": "Seconds to wait before the next request",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}
# Either header carries the key; every order route needs one, the documentation none.
_SECURITY_SCHEMES = {
    "bearerKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
}
_KEY_REQUIRED: list[dict[str, list[str]]] = [{name: []} for name in _SECURITY_SCHEMES]


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The model's fields as optional query parameters: the same model validates them."""
    schema = model.model_json_schema()
    parameters = []
    for name, field_schema in schema["properties"].items():
        described = {key: value for key, value in field_schema.items() if key not in {"title", "description"}}
        # Optional means absent: a query parameter has no null.
        parameter_schema = _to_openapi_30(described)
        parameter_schema.pop("nullable", None)
        if parameter_schema.get("default", 0) is None:
            del parameter_schema["default"]
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": name in schema.get("required", []),
                "description": field_schema.get("description", ""),
                "schema": parameter_schema,
            }
        )
    return parameters


# Besides the orders, the order events and the stream's tokens need a key.
_SECURED_PREFIXES = ("/orders", "/events", "/stream/")
# The writes a read-only key may make (chalicelib/entrypoints/auth.py READ_KEY_WRITES).
_READ_KEY_WRITES = {("POST", "/stream/tokens")}


def _secured(paths: dict[str, Any]) -> dict[str, Any]:
    """Every order operation needs an API key and may answer 401 or 429; a write also 403 (a read-only key)."""
    for path, operations in paths.items():
        if not path.startswith(_SECURED_PREFIXES):
            continue
        for method, operation in operations.items():
            operation["security"] = _KEY_REQUIRED
            operation["responses"]["401"] = _UNAUTHORIZED
            # Throttled after the authorizer, per account (the usage plans; locally the API server).
            operation["responses"]["429"] = _TOO_MANY_REQUESTS
            if method.upper() not in ("GET", "HEAD", "OPTIONS") and (method.upper(), path) not in _READ_KEY_WRITES:
                operation["responses"]["403"] = _READ_ONLY_KEY
            # The key store itself may be down: the authorizer answers 503.
            operation["responses"].setdefault("503", _UNAVAILABLE)
    return paths


def _list_orders() -> dict[str, Any]:
    return {
        "operationId": "listOrders",
        "summary": "Your orders, newest first, a page at a time",
        "description": "Filters combine (all must match). A page holds at most `limit` orders; its `next`"
        " value fetches the following page when passed back with the same filters. One request reads a"
        " bounded number of orders, so with a selective filter a page may hold fewer than `limit`"
        " orders, even none, and still have a `next`: a short page is not the end, only a null `next` is.",
        "tags": ["orders"],
        "parameters": _query_parameters(ListOrdersQuery),
        "responses": {
            "200": _response("A page of orders", OrderListResponse),
            "422": _response(
                "A query parameter is unknown, repeated or invalid; each problem names it",
                ValidationErrorResponse,
            ),
            "503": _UNAVAILABLE,
        },
    }


def _create_order() -> dict[str, Any]:
    return {
        "operationId": "createOrder",
        "summary": "Place an order",
        "description": "Stores the order (pending) and queues it for placement at the exchange. The body is"
        f" one JSON object in UTF-8 of at most {MAX_BODY_BYTES} bytes, each key at most once. With a"
        f" client_order_id (at most {CLIENT_ORDER_ID_MAX_LENGTH} characters) the request is idempotent.",
        "tags": ["orders"],
        "parameters": [_CORRELATION_PARAMETER],
        "requestBody": {"required": True, "content": _json_content(OrderRequest)},
        "responses": {
            "201": _response("Created: stored, and it will be placed", OrderResponse, correlated=True),
            "200": _response(
                "A replay: an order with this client_order_id and the same terms exists",
                OrderResponse,
                correlated=True,
            ),
            "400": _response(
                "The body is not one JSON object (malformed, not UTF-8, a duplicate key, NaN, too deep)",
                ErrorResponse,
                correlated=True,
            ),
            "409": _response(
                "The client_order_id belongs to an order with other terms", ErrorResponse, correlated=True
            ),
            "413": _response(f"The body is longer than {MAX_BODY_BYTES} bytes", ErrorResponse, correlated=True),
            "415": _response(
                "The Content-Type is not application/json (a request without one is read as JSON)", ErrorResponse
            ),
            "422": _response(
                "Fields are missing or invalid; each problem names its field. Or the order is over one of"
                " the account's pre-trade risk limits (max_order_notional: limit price, or for a market order"
                " the exchange's reference price, x quantity; max_order_quantity; max_open_orders): the message"
                " names the limit, its value and the order's; nothing is stored",
                ValidationErrorResponse,
                correlated=True,
            ),
            "500": _response("The order could not be stored; nothing will be placed", ErrorResponse, correlated=True),
            "503": _response(
                "Storage is unavailable, or a market order cannot be valued: the exchange's reference price"
                " is unavailable (the message says why); nothing is stored, retry later",
                ErrorResponse,
                correlated=True,
            ),
        },
    }


def _get_order() -> dict[str, Any]:
    return {
        "operationId": "getOrder",
        "summary": "An order and its status",
        "tags": ["orders"],
        "parameters": [_ORDER_ID_PARAMETER],
        "responses": {
            "200": _response("The order", OrderResponse),
            "404": _NOT_FOUND,
            "503": _UNAVAILABLE,
        },
    }


def _cancel_order() -> dict[str, Any]:
    return {
        "operationId": "cancelOrder",
        "summary": "Cancel an order",
        "description": "An order the exchange cannot have yet is canceled at once (200). An order the"
        " exchange may hold becomes pending_cancel (202) until the exchange confirms through its"
        " execution feed: then it is canceled, or filled if the fill came first. Repeating the"
        " request is harmless: it answers 202 again, and the exchange is asked at most once every few"
        " seconds (CANCEL_RESEND_INTERVAL_S) however often it is repeated.",
        "tags": ["orders"],
        "parameters": [_ORDER_ID_PARAMETER, _CORRELATION_PARAMETER],
        "responses": {
            "200": _response("Canceled", OrderResponse, correlated=True),
            "202": _response("pending_cancel: the exchange is asked", OrderResponse, correlated=True),
            "404": _NOT_FOUND,
            "409": _response("The order is done (filled, canceled, rejected, expired or failed)", ErrorResponse),
            "503": _UNAVAILABLE,
        },
    }


_CLIENT_ORDER_ID_PARAMETER = {
    "name": "client_order_id",
    "in": "path",
    "required": True,
    "description": "The client_order_id the order was created with, percent-encoded (RFC 3986: e.g. a space as"
    " %20, '/' as %2F, '%' as %25); it is decoded once",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": CLIENT_ORDER_ID_MAX_LENGTH,
        "pattern": CLIENT_ORDER_ID_PATTERN,
    },
}


def _get_order_by_client_order_id() -> dict[str, Any]:
    return {
        "operationId": "getOrderByClientOrderId",
        "summary": "Your order with this client_order_id",
        "description": "The order POST /orders created with this client_order_id: one strongly consistent read,"
        " as the key names the order's id. Another account's order with the same key is not yours: 404, as for"
        " none. A read-only key may use it.",
        "tags": ["orders"],
        "parameters": [_CLIENT_ORDER_ID_PARAMETER],
        "responses": {
            "200": _response("The order", OrderResponse),
            "404": _response("No order of yours has this client_order_id", ErrorResponse),
            "422": _response(
                "The client_order_id breaks the rules POST /orders holds it to (the message says which)",
                ValidationErrorResponse,
            ),
            "503": _UNAVAILABLE,
        },
    }


def _cancel_all_orders() -> dict[str, Any]:
    return {
        "operationId": "cancelAllOrders",
        "summary": "Cancel all your open orders",
        "description": "Cancels each open order as DELETE /orders/{order_id} would, and answers 207 with one result"
        " per order: its own HTTP status (200 canceled at once, 202 pending_cancel, 409 done a moment ago, 503 not"
        " canceled now) and the order. None open: 207 with no results. One request handles at most"
        f" {CANCEL_ALL_MAX_ORDERS} orders within a few seconds; `more` says whether open orders may be left, and"
        " `next`, passed back as `after`, goes on after the last one handled. Repeating the request is safe: an"
        " order already pending_cancel answers 202 again, and the exchange is asked at most once every few seconds"
        " per order. Orders created while it runs, or a moment before (the open-orders index lags by up to about a"
        " second), may be left open.",
        "tags": ["orders"],
        "parameters": [*_query_parameters(CancelAllQuery), _CORRELATION_PARAMETER],
        "responses": {
            "207": _response("Each open order's result", CancelAllResponse, correlated=True),
            "422": _response("A query parameter is unknown, repeated or invalid", ValidationErrorResponse),
            "503": _response(
                "The open orders could not be listed or read; nothing was canceled, retry later", ErrorResponse
            ),
        },
    }


def _list_executions() -> dict[str, Any]:
    return {
        "operationId": "listExecutions",
        "summary": "An order's execution reports, oldest first, a page at a time",
        "description": "A page holds at most `limit` executions; while more follow, its `next` value passed"
        " back as `after` fetches them. A null `next` means none follow yet (an open order may get more).",
        "tags": ["orders"],
        "parameters": [_ORDER_ID_PARAMETER, *_query_parameters(ListExecutionsQuery)],
        "responses": {
            "200": _response("The order's executions (none yet: an empty list)", ExecutionListResponse),
            "404": _NOT_FOUND,
            "422": _response(
                "A query parameter is unknown, repeated or invalid; each problem names it",
                ValidationErrorResponse,
            ),
            "503": _UNAVAILABLE,
        },
    }


def _list_events() -> dict[str, Any]:
    return {
        "operationId": "listOrderEvents",
        "summary": "Your order events, oldest first, a page at a time",
        "description": "Each change of one of your orders, in the order it happened; events are kept at least"
        " 7 days. A page holds at most `limit` events. Its `next` is always there: pass it back as `after` to get"
        " the events after these (none yet: an empty page with the same `next`), so polling with it never skips"
        " and never repeats an event. The WebSocket stream (see the tag `stream`) pushes the same events.",
        "tags": ["stream"],
        "parameters": _query_parameters(ListEventsQuery),
        "responses": {
            "200": _response("A page of events (none after the cursor yet: an empty list)", OrderEventPage),
            "422": _response(
                "A query parameter is unknown, repeated or invalid, or `after` names no event of yours (past your"
                " latest); each problem names its parameter",
                ValidationErrorResponse,
            ),
            "503": _UNAVAILABLE,
        },
    }


def _create_stream_token() -> dict[str, Any]:
    return {
        "operationId": "createStreamToken",
        "summary": "A single-use token to connect to the order stream from a browser",
        "description": "Browsers cannot set headers on a WebSocket: connect with `?token=<token>` instead of the"
        " key. The token connects once, within 5 minutes, as the key that asked for it (a revoked key's"
        " connections are closed). A read-only key may ask for one: the stream only reads.",
        "tags": ["stream"],
        "responses": {
            "201": _response("The token", StreamTokenResponse),
            "503": _UNAVAILABLE,
        },
    }


def _get_openapi_document() -> dict[str, Any]:
    return {
        "operationId": "getOpenApiDocument",
        "summary": "This document",
        "tags": ["documentation"],
        "responses": {
            "200": {
                "description": "The OpenAPI document",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }


def _get_docs() -> dict[str, Any]:
    return {
        "operationId": "getDocs",
        "summary": "Interactive documentation (Swagger UI), served without any CDN",
        "tags": ["documentation"],
        "responses": {"200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}},
    }


def _get_docs_asset() -> dict[str, Any]:
    return {
        "operationId": "getDocsAsset",
        "summary": "A script or style sheet of the documentation page",
        "tags": ["documentation"],
        "parameters": [
            {
                "name": "asset",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": sorted(ASSETS)},
            }
        ],
        "responses": {
            "200": {
                "description": "The file",
                "content": {
                    media_type: {"schema": {"type": "string"}}
                    # The media type without its charset parameter, as OpenAPI keys them.
                    for media_type in sorted({media.split(";")[0] for _, media in ASSETS.values()})
                },
            },
            "404": _response("No such file", ErrorResponse),
        },
    }


def _paths() -> dict[str, Any]:
    # One function per operation; each call builds fresh dicts, so _secured may add to them.
    return _secured(
        {
            "/orders": {"get": _list_orders(), "post": _create_order(), "delete": _cancel_all_orders()},
            "/orders/by-client-order-id/{client_order_id}": {"get": _get_order_by_client_order_id()},
            "/orders/{order_id}": {"get": _get_order(), "delete": _cancel_order()},
            "/orders/{order_id}/executions": {"get": _list_executions()},
            "/events": {"get": _list_events()},
            "/stream/tokens": {"post": _create_stream_token()},
            "/openapi.json": {"get": _get_openapi_document()},
            "/docs": {"get": _get_docs()},
            "/docs/{asset}": {"get": _get_docs_asset()},
        }
    )


# OpenAPI 3.0 cannot describe a WebSocket: the stream's protocol is told here, on its tag.
_STREAM_DESCRIPTION = """Live order events: GET /events pages them, and a WebSocket stream pushes them.

**URL**: locally `ws://127.0.0.1:8003` (`make run` prints it); on AWS the stack's `StreamUrl` output (`wss://...`).

**Connecting**: send the API key as `Authorization: Bearer <key>` or `x-api-key: <key>`, or (from a browser)
`?token=<token>` from POST /stream/tokens. A missing, unknown or revoked key refuses the handshake with 401
`{"message": ...}`; a revoked key's open connections are closed within 60 s.

**Listening**: send `{"action": "listen", "after": "<event id>"}` (`after` optional: without it, only the
events from now on). The server sends every event of yours after the cursor, then
`{"stream": "orders", "listening": true}`, then each new event as it happens. Each event is one text message
`{"stream": "orders", "event": <OrderEventResponse>}`. An unknown action, bad JSON or an unknown cursor gets
`{"error": "<what is wrong>"}` and the connection stays open.

**Delivery is at least once**: an event may come twice (around a listen's catch-up, or after a reconnect).
Deduplicate by its `id`, and keep the last id you handled: reconnect with it as `after` and nothing is missed.
"""


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The whole document; built once per process (do not modify it)."""
    _, definitions = models_json_schema(_MODELS, ref_template=_SCHEMAS + "{model}")
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Brokerage orders API",
            "version": API_VERSION,
            "description": "Place stock orders and follow them until the exchange has filled, canceled or"
            " rejected them. Every error is JSON with a message; 422 also lists each invalid field.",
        },
        "tags": [
            {"name": "orders", "description": "Placing and following orders"},
            {"name": "stream", "description": _STREAM_DESCRIPTION},
            {"name": "documentation", "description": "This document and its interactive page"},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _schemas_to_openapi_30(definitions.get("$defs", {})),
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


def _base_path(context: Mapping[str, Any]) -> str:
    # API Gateway puts the stage (or a custom domain's base path) before our
    # routes: /api/openapi.json for the route /openapi.json. Try-it-out in
    # the docs page must call /api/orders, so the document says where it is.
    path = str(context.get("path") or "")
    route = str(context.get("resourcePath") or "")
    if route and path.endswith(route):
        return path[: len(path) - len(route)]
    return ""


def openapi_response(context: Mapping[str, Any]) -> Response:
    document = copy.copy(openapi_document())  # shallow: only "servers" differs per request
    document["servers"] = [{"url": _base_path(context) or "/"}]
    return Response(body=document, status_code=200, headers={"Content-Type": "application/json"})
