"""HTTP routes' logic: parse the request, call the service, shape the response."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Mapping
from typing import Any

from chalice.app import Request, Response

from chalicelib import bootstrap
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.config import get_settings
from chalicelib.domain.model import IdempotencyConflict, OrderNotFound, is_order_id
from chalicelib.entrypoints.schemas import (
    BadRequest,
    InvalidOrder,
    OrderLimits,
    error_body,
    executions_to_json,
    invalid_order_to_json,
    order_to_json,
    parse_order_request,
)
from chalicelib.observability import count, logger, metrics, tracer
from chalicelib.service import executions, orders

STORE_FAILED_BODY = error_body("Internal server error while placing the order")
NOT_FOUND_BODY = error_body("Order not found")
UNAVAILABLE_BODY = error_body("Orders are temporarily unavailable, retry later")


CORRELATION_HEADER = "X-Correlation-Id"
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def correlation_id_for(headers: Mapping[str, str], context: Mapping[str, Any]) -> str:
    """The caller's X-Correlation-Id if it is sane, else API Gateway's request id, else a new one."""
    given = headers.get(CORRELATION_HEADER.lower()) or headers.get(CORRELATION_HEADER) or ""
    if _CORRELATION_ID.match(given):
        return given
    return str(context.get("requestId") or uuid.uuid4())


@functools.cache
def _order_limits() -> OrderLimits:
    settings = get_settings()
    return OrderLimits(max_quantity=settings.max_order_quantity, max_limit_price=settings.max_limit_price)


def _json(status: int, body: dict[str, Any], correlation_id: str | None = None) -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json"}
    if correlation_id:
        headers[CORRELATION_HEADER] = correlation_id
    return Response(body=body, status_code=status, headers=headers)


@tracer.capture_method
def post_order(request: Request) -> Response:
    correlation_id = correlation_id_for(request.headers, request.context)
    logger.thread_safe_append_keys(correlation_id=correlation_id)
    try:
        return _post_order(request.raw_body, correlation_id)
    finally:
        metrics.flush_metrics()
        logger.thread_safe_clear_keys()


def _post_order(raw_body: bytes | str | None, correlation_id: str) -> Response:
    try:
        terms = parse_order_request(raw_body, _order_limits())
    except BadRequest as exc:
        # 400, or 413 for a body over the size limit.
        return _json(exc.status, error_body(str(exc)), correlation_id)
    except InvalidOrder as exc:
        return _json(422, invalid_order_to_json(exc), correlation_id)
    try:
        result = orders.create_order(
            terms,
            repository=bootstrap.order_repository(),
            queue=bootstrap.placement_queue(),
            sweep_after=bootstrap.stuck_after(),
            correlation_id=correlation_id,
        )
    except IdempotencyConflict as exc:
        return _json(409, error_body(str(exc)), correlation_id)
    except StorageUnavailable:
        logger.exception("order not stored")
        return _json(500, STORE_FAILED_BODY, correlation_id)
    if result.created:
        count("OrdersCreated")
        logger.info("order created", order_id=result.order.id)
    # A replay answers with the order's own correlation id: the one in its logs.
    return _json(
        201 if result.created else 200, order_to_json(result.order), result.order.correlation_id or correlation_id
    )


def get_order(order_id: str) -> Response:
    # A malformed id cannot name an order; don't send it to DynamoDB at all.
    if not is_order_id(order_id):
        return _json(404, NOT_FOUND_BODY)
    try:
        order = orders.get_order(order_id, bootstrap.order_repository())
    except OrderNotFound:
        return _json(404, NOT_FOUND_BODY)
    except StorageUnavailable:
        logger.exception("order not read", order_id=order_id)
        return _json(503, UNAVAILABLE_BODY)
    return _json(200, order_to_json(order))


def get_executions(order_id: str) -> Response:
    if not is_order_id(order_id):
        return _json(404, NOT_FOUND_BODY)
    try:
        reports = executions.list_executions(order_id, bootstrap.order_repository(), bootstrap.execution_repository())
    except OrderNotFound:
        return _json(404, NOT_FOUND_BODY)
    except StorageUnavailable:
        logger.exception("executions not read", order_id=order_id)
        return _json(503, UNAVAILABLE_BODY)
    return _json(200, executions_to_json(order_id, reports))
