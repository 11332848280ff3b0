"""HTTP routes' logic: parse the request, call the service, shape the response."""

from __future__ import annotations

import logging
from typing import Any

from chalice.app import Response

from chalicelib import bootstrap
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.model import IdempotencyConflict, OrderNotFound, is_order_id
from chalicelib.entrypoints.schemas import (
    BadRequest,
    InvalidOrder,
    execution_to_json,
    order_to_json,
    parse_order_request,
)
from chalicelib.service import executions, orders

logger = logging.getLogger(__name__)

STORE_FAILED_BODY = {"message": "Internal server error while placing the order"}
NOT_FOUND_BODY = {"message": "Order not found"}
UNAVAILABLE_BODY = {"message": "Orders are temporarily unavailable, retry later"}


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json"})


def post_order(raw_body: bytes | str | None) -> Response:
    try:
        terms = parse_order_request(raw_body)
    except BadRequest as exc:
        return _json(400, {"message": str(exc)})
    except InvalidOrder as exc:
        return _json(
            422,
            {
                "message": "Invalid order: " + "; ".join(e.message for e in exc.errors),
                "errors": [{"field": e.field, "message": e.message} for e in exc.errors],
            },
        )
    try:
        result = orders.create_order(
            terms,
            repository=bootstrap.order_repository(),
            queue=bootstrap.placement_queue(),
            sweep_after=bootstrap.stuck_after(),
        )
    except IdempotencyConflict as exc:
        return _json(409, {"message": str(exc)})
    except StorageUnavailable:
        logger.exception("order not stored")
        return _json(500, STORE_FAILED_BODY)
    return _json(201 if result.created else 200, order_to_json(result.order))


def get_order(order_id: str) -> Response:
    # A malformed id cannot name an order; don't send it to DynamoDB at all.
    if not is_order_id(order_id):
        return _json(404, NOT_FOUND_BODY)
    try:
        order = orders.get_order(order_id, bootstrap.order_repository())
    except OrderNotFound:
        return _json(404, NOT_FOUND_BODY)
    except StorageUnavailable:
        logger.exception("order not read", extra={"order_id": order_id})
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
        logger.exception("executions not read", extra={"order_id": order_id})
        return _json(503, UNAVAILABLE_BODY)
    return _json(200, {"order_id": order_id, "executions": [execution_to_json(r) for r in reports]})
