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
from chalicelib.entrypoints.openapi_parts import (
    API_VERSION,
    CORRELATION_PARAMETER,
    NOT_FOUND,
    OPENAPI_VERSION,
    ORDER_ID_PARAMETER,
    SCHEMAS,
    SECURITY_SCHEMES,
    UNAVAILABLE,
    json_content,
    query_parameters,
    response,
    schemas_to_openapi_30,
    secured,
)
from chalicelib.entrypoints.replace_request import ReplaceRequest
from chalicelib.entrypoints.request_models import (
    CLIENT_ORDER_ID_MAX_LENGTH,
    CLIENT_ORDER_ID_PATTERN,
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

# Request models are described as they validate, response models as they serialize.
_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (OrderRequest, "validation"),
    (ReplaceRequest, "validation"),
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


def _list_orders() -> dict[str, Any]:
    return {
        "operationId": "listOrders",
        "summary": "Your orders, newest first, a page at a time",
        "description": "Filters combine (all must match). A page holds at most `limit` orders; its `next`"
        " value fetches the following page when passed back with the same filters. One request reads a"
        " bounded number of orders, so with a selective filter a page may hold fewer than `limit`"
        " orders, even none, and still have a `next`: a short page is not the end, only a null `next` is.",
        "tags": ["orders"],
        "parameters": query_parameters(ListOrdersQuery),
        "responses": {
            "200": response("A page of orders", OrderListResponse),
            "422": response(
                "A query parameter is unknown, repeated or invalid; each problem names it",
                ValidationErrorResponse,
            ),
            "503": UNAVAILABLE,
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
        "parameters": [CORRELATION_PARAMETER],
        "requestBody": {"required": True, "content": json_content(OrderRequest)},
        "responses": {
            "201": response("Created: stored, and it will be placed", OrderResponse, correlated=True),
            "200": response(
                "A replay: an order with this client_order_id and the same terms exists",
                OrderResponse,
                correlated=True,
            ),
            "400": response(
                "The body is not one JSON object (malformed, not UTF-8, a duplicate key, NaN, too deep)",
                ErrorResponse,
                correlated=True,
            ),
            "409": response("The client_order_id belongs to an order with other terms", ErrorResponse, correlated=True),
            "413": response(f"The body is longer than {MAX_BODY_BYTES} bytes", ErrorResponse, correlated=True),
            "415": response(
                "The Content-Type is not application/json (a request without one is read as JSON)", ErrorResponse
            ),
            "422": response(
                "Fields are missing or invalid; each problem names its field. Or the order is over one of"
                " the account's pre-trade risk limits (max_order_notional: limit price, or for a market order"
                " the exchange's reference price, x quantity; max_order_quantity; max_open_orders): the message"
                " names the limit, its value and the order's; nothing is stored",
                ValidationErrorResponse,
                correlated=True,
            ),
            "500": response("The order could not be stored; nothing will be placed", ErrorResponse, correlated=True),
            "503": response(
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
        "parameters": [ORDER_ID_PARAMETER],
        "responses": {
            "200": response("The order", OrderResponse),
            "404": NOT_FOUND,
            "503": UNAVAILABLE,
        },
    }


def _replace_order() -> dict[str, Any]:
    return {
        "operationId": "replaceOrder",
        "summary": "Replace an open order (cancel/replace)",
        "description": "Changes quantity (the new total, fills included), prices, time in force or expiry of an"
        " order the exchange holds. Answers 202 with the replacement: a new order, pending, whose `replaces` is"
        " this order's id; this order goes pending_replace (its `replaced_by` names the replacement). Once the"
        " exchange confirms, this order is replaced and the replacement is placed, carrying this order's fills."
        " If the exchange refuses because this order was done first, the replacement ends rejected"
        " (failure_reason 'too late to replace') and this order goes on as the exchange has it. With a"
        " client_order_id the request is idempotent, like POST /orders; without one, a repeat meets the"
        " pending replace and gets 409.",
        "tags": ["orders"],
        "parameters": [ORDER_ID_PARAMETER, CORRELATION_PARAMETER],
        "requestBody": {"required": True, "content": json_content(ReplaceRequest)},
        "responses": {
            "202": response("Accepted: the replacement, pending", OrderResponse, correlated=True),
            "200": response(
                "A replay: the replacement made with this client_order_id and the same changes",
                OrderResponse,
                correlated=True,
            ),
            "400": response("The body is not one JSON object", ErrorResponse, correlated=True),
            "404": NOT_FOUND,
            "409": response(
                "The order cannot be replaced now: it is done, not yet accepted by the exchange (pending), or a"
                " cancel or replace of it is pending; or the client_order_id names another order",
                ErrorResponse,
                correlated=True,
            ),
            "413": response(f"The body is longer than {MAX_BODY_BYTES} bytes", ErrorResponse, correlated=True),
            "422": response(
                "A field is invalid or does not suit the order (a price its type does not take, a quantity not"
                " above what it has filled, nothing to change), or the replacement is over a pre-trade risk limit",
                ValidationErrorResponse,
                correlated=True,
            ),
            "503": response(
                "Storage is unavailable, or a market or stop order cannot be valued; retry (with the same"
                " client_order_id to be safe)",
                ErrorResponse,
                correlated=True,
            ),
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
        "parameters": [ORDER_ID_PARAMETER, CORRELATION_PARAMETER],
        "responses": {
            "200": response("Canceled", OrderResponse, correlated=True),
            "202": response("pending_cancel: the exchange is asked", OrderResponse, correlated=True),
            "404": NOT_FOUND,
            "409": response("The order is done (filled, canceled, rejected, expired or failed)", ErrorResponse),
            "503": UNAVAILABLE,
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
            "200": response("The order", OrderResponse),
            "404": response("No order of yours has this client_order_id", ErrorResponse),
            "422": response(
                "The client_order_id breaks the rules POST /orders holds it to (the message says which)",
                ValidationErrorResponse,
            ),
            "503": UNAVAILABLE,
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
        "parameters": [*query_parameters(CancelAllQuery), CORRELATION_PARAMETER],
        "responses": {
            "207": response("Each open order's result", CancelAllResponse, correlated=True),
            "422": response("A query parameter is unknown, repeated or invalid", ValidationErrorResponse),
            "503": response(
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
        "parameters": [ORDER_ID_PARAMETER, *query_parameters(ListExecutionsQuery)],
        "responses": {
            "200": response("The order's executions (none yet: an empty list)", ExecutionListResponse),
            "404": NOT_FOUND,
            "422": response(
                "A query parameter is unknown, repeated or invalid; each problem names it",
                ValidationErrorResponse,
            ),
            "503": UNAVAILABLE,
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
        "parameters": query_parameters(ListEventsQuery),
        "responses": {
            "200": response("A page of events (none after the cursor yet: an empty list)", OrderEventPage),
            "422": response(
                "A query parameter is unknown, repeated or invalid, or `after` names no event of yours (past your"
                " latest); each problem names its parameter",
                ValidationErrorResponse,
            ),
            "503": UNAVAILABLE,
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
            "201": response("The token", StreamTokenResponse),
            "503": UNAVAILABLE,
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
            "404": response("No such file", ErrorResponse),
        },
    }


def _paths() -> dict[str, Any]:
    # One function per operation; each call builds fresh dicts, so secured may add to them.
    return secured(
        {
            "/orders": {"get": _list_orders(), "post": _create_order(), "delete": _cancel_all_orders()},
            "/orders/by-client-order-id/{client_order_id}": {"get": _get_order_by_client_order_id()},
            "/orders/{order_id}": {"get": _get_order(), "delete": _cancel_order(), "patch": _replace_order()},
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
    _, definitions = models_json_schema(_MODELS, ref_template=SCHEMAS + "{model}")
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
            "schemas": schemas_to_openapi_30(definitions.get("$defs", {})),
            "securitySchemes": SECURITY_SCHEMES,
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
