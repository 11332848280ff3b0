"""HTTP routes' logic: parse the request, call the service, shape the response."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from chalice.app import Request, Response

from chalicelib.adapters.reference_prices import ReferencePriceUnavailable
from chalicelib.adapters.repository import ConcurrentModification, StorageUnavailable
from chalicelib.config import get_settings
from chalicelib.domain.model import (
    IdempotencyConflict,
    Order,
    OrderNotCancelable,
    OrderNotFound,
    OrderStatus,
    is_order_id,
)
from chalicelib.domain.order_terms import ExpiryRefused
from chalicelib.domain.risk import RiskLimitExceeded
from chalicelib.entrypoints.execution_query import parse_executions_query
from chalicelib.entrypoints.json_body import BadRequest
from chalicelib.entrypoints.request_models import (
    FieldError,
    InvalidOrder,
    OrderLimits,
    parse_list_query,
    parse_order_request,
)
from chalicelib.entrypoints.response_models import (
    FieldErrorResponse,
    ValidationErrorResponse,
    error_body,
    executions_to_json,
    invalid_order_to_json,
    order_page_to_json,
    order_to_json,
)
from chalicelib.observability import count, logger, metrics, tracer
from chalicelib.service import client_orders, executions
from chalicelib.service.dependencies import Dependencies

STORE_FAILED_BODY = error_body("Internal server error while placing the order")
NOT_FOUND_BODY = error_body("Order not found")
UNAVAILABLE_BODY = error_body("Orders are temporarily unavailable, retry later")
NO_REFERENCE_PRICE = (
    "Market or stop order refused: its notional cannot be checked against the account's max_order_notional"
    " without the exchange's reference price, which is unavailable; retry later or send a limit order"
)
# The authorizer runs before every order route and names the account; a route
# reached without it is a deployment mistake, answered like a missing key.
NO_ACCOUNT_BODY = error_body("Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")


CORRELATION_HEADER = "X-Correlation-Id"
# fullmatch, not match with "$": "$" also matches before a trailing newline, which would reach the logs.
_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def correlation_id_for(headers: Mapping[str, str], context: Mapping[str, Any]) -> str:
    """The caller's X-Correlation-Id if it is sane, else API Gateway's request id, else a new one."""
    given = headers.get(CORRELATION_HEADER.lower()) or headers.get(CORRELATION_HEADER) or ""
    if _CORRELATION_ID.fullmatch(given):
        return given
    return str(context.get("requestId") or uuid.uuid4())


@functools.cache
def order_limits() -> OrderLimits:
    settings = get_settings()
    return OrderLimits(max_quantity=settings.max_order_quantity, max_limit_price=settings.max_limit_price)


def risk_refusal_to_json(refusal: RiskLimitExceeded) -> dict[str, Any]:
    """A 422 like a validation error's (so one schema documents both): the message names the limit and values."""
    message = str(refusal)
    return ValidationErrorResponse(
        message=message, errors=[FieldErrorResponse(field=refusal.field, message=message)]
    ).model_dump(mode="json")


def account_of(request: Request) -> str | None:
    """The caller's account, as the authorizer put it in the request context."""
    authorizer = request.context.get("authorizer") or {}
    account_id = authorizer.get("account_id") if isinstance(authorizer, dict) else None
    return account_id if isinstance(account_id, str) and account_id else None


def json_response(status: int, body: dict[str, Any], correlation_id: str | None = None) -> Response:
    """A JSON answer, with the request's correlation id header when it has one (every route's answers)."""
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json"}
    if correlation_id:
        headers[CORRELATION_HEADER] = correlation_id
    return Response(body=body, status_code=status, headers=headers)


@tracer.capture_method
def post_order(request: Request, dependencies: Dependencies) -> Response:
    correlation_id = correlation_id_for(request.headers, request.context)
    account_id = account_of(request)
    if account_id is None:
        return json_response(401, NO_ACCOUNT_BODY, correlation_id)
    logger.thread_safe_append_keys(correlation_id=correlation_id, account_id=account_id)
    try:
        return _post_order(account_id, request.raw_body, correlation_id, dependencies)
    finally:
        metrics.flush_metrics()
        logger.thread_safe_clear_keys()


def _post_order(
    account_id: str, raw_body: bytes | str | None, correlation_id: str, dependencies: Dependencies
) -> Response:
    try:
        terms = parse_order_request(raw_body, order_limits())
    except BadRequest as exc:
        # 400, or 413 for a body over the size limit.
        return json_response(exc.status, error_body(str(exc)), correlation_id)
    except InvalidOrder as exc:
        return json_response(422, invalid_order_to_json(exc), correlation_id)
    try:
        result = client_orders.create_order(account_id, terms, dependencies, correlation_id=correlation_id)
    except IdempotencyConflict as exc:
        return json_response(409, error_body(str(exc)), correlation_id)
    except ExpiryRefused as exc:
        # The body's own 422: only the clock (at the create, after the idempotent look-up) tells it apart.
        return json_response(
            422, invalid_order_to_json(InvalidOrder([FieldError(exc.field, str(exc))])), correlation_id
        )
    except RiskLimitExceeded as exc:
        count("OrdersRefusedByRiskLimit")
        logger.info("order refused by a risk limit", limit=exc.limit)
        return json_response(422, risk_refusal_to_json(exc), correlation_id)
    except ReferencePriceUnavailable as exc:
        # Fail closed: a market or stop order that cannot be valued is not stored; the client may retry.
        logger.warning("order refused: no reference price", reason=str(exc))
        # The detail (the venue's answer, the secret's name) stays in the log.
        return json_response(503, error_body(NO_REFERENCE_PRICE), correlation_id)
    except StorageUnavailable:
        logger.exception("order not stored")
        return json_response(500, STORE_FAILED_BODY, correlation_id)
    if result.created:
        count("OrdersCreated")
        logger.info("order created", order_id=result.order.id)
    # A replay answers with the order's own correlation id: the one in its logs.
    return json_response(
        201 if result.created else 200, order_to_json(result.order), result.order.correlation_id or correlation_id
    )


def get_order(request: Request, order_id: str, dependencies: Dependencies) -> Response:
    account_id = account_of(request)
    if account_id is None:
        return json_response(401, NO_ACCOUNT_BODY)
    # A malformed id cannot name an order; don't send it to DynamoDB at all.
    if not is_order_id(order_id):
        return json_response(404, NOT_FOUND_BODY)
    return order_read_response(
        lambda: client_orders.get_order(order_id, account_id, dependencies), "order not read", order_id=order_id
    )


def order_read_response(read: Callable[[], Order], failure_message: str, **log_keys: Any) -> Response:
    """One order read for its owner: 200 with it, 404 if the caller has no such order, 503 if storage failed."""
    try:
        order = read()
    except OrderNotFound:
        return json_response(404, NOT_FOUND_BODY)
    except StorageUnavailable:
        logger.exception(failure_message, **log_keys)
        return json_response(503, UNAVAILABLE_BODY)
    return json_response(200, order_to_json(order))


def list_orders(request: Request, dependencies: Dependencies) -> Response:
    account_id = account_of(request)
    if account_id is None:
        return json_response(401, NO_ACCOUNT_BODY)
    params = request.query_params
    try:
        query = parse_list_query(account_id, {name: params.getlist(name) for name in params} if params else None)
    except InvalidOrder as exc:
        return json_response(422, invalid_order_to_json(exc))
    try:
        page = client_orders.list_orders(query, dependencies)
    except StorageUnavailable:
        logger.exception("orders not listed", account_id=account_id)
        return json_response(503, UNAVAILABLE_BODY)
    return json_response(200, order_page_to_json(page))


def cancel_order(request: Request, order_id: str, dependencies: Dependencies) -> Response:
    """200 with the order canceled at once; 202 while the exchange is asked (pending_cancel)."""
    correlation_id = correlation_id_for(request.headers, request.context)
    account_id = account_of(request)
    if account_id is None:
        return json_response(401, NO_ACCOUNT_BODY, correlation_id)
    if not is_order_id(order_id):
        return json_response(404, NOT_FOUND_BODY, correlation_id)
    try:
        order = client_orders.cancel_order(order_id, account_id, dependencies)
    except OrderNotFound:
        return json_response(404, NOT_FOUND_BODY, correlation_id)
    except OrderNotCancelable as exc:
        return json_response(409, error_body(f"Order is {exc.status} and can no longer be canceled"), correlation_id)
    except (StorageUnavailable, ConcurrentModification):
        # ConcurrentModification: lost the write race to others several
        # times in a row; nothing was changed by this request.
        logger.exception("order not canceled", order_id=order_id)
        return json_response(503, UNAVAILABLE_BODY, correlation_id)
    logger.info("cancel requested", order_id=order_id, status=order.status.value)
    return json_response(
        202 if order.status is OrderStatus.PENDING_CANCEL else 200, order_to_json(order), correlation_id
    )


def get_executions(request: Request, order_id: str, dependencies: Dependencies) -> Response:
    account_id = account_of(request)
    if account_id is None:
        return json_response(401, NO_ACCOUNT_BODY)
    if not is_order_id(order_id):
        return json_response(404, NOT_FOUND_BODY)
    params = request.query_params
    try:
        query = parse_executions_query({name: params.getlist(name) for name in params} if params else None)
    except InvalidOrder as exc:
        return json_response(422, invalid_order_to_json(exc))
    try:
        page = executions.list_executions(order_id, account_id, dependencies, query.after, query.limit)
    except OrderNotFound:
        return json_response(404, NOT_FOUND_BODY)
    except StorageUnavailable:
        logger.exception("executions not read", order_id=order_id)
        return json_response(503, UNAVAILABLE_BODY)
    return json_response(200, executions_to_json(order_id, page.executions, page.next))
