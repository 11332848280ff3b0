"""PATCH /orders/{id}: replace an open order (202 with the replacement, pending; 200 for a replay of the same key)."""

from __future__ import annotations

from chalice.app import Request, Response

from chalicelib.adapters.reference_prices import ReferencePriceUnavailable
from chalicelib.adapters.repository import ConcurrentModification, StorageUnavailable
from chalicelib.domain.model import IdempotencyConflict, OrderNotFound, OrderNotReplaceable, is_order_id
from chalicelib.domain.order_terms import ExpiryRefused
from chalicelib.domain.replace import ReplaceTermsRefused
from chalicelib.domain.risk import RiskLimitExceeded
from chalicelib.entrypoints.http import (
    NO_ACCOUNT_BODY,
    NO_REFERENCE_PRICE,
    NOT_FOUND_BODY,
    UNAVAILABLE_BODY,
    account_of,
    correlation_id_for,
    json_response,
    order_limits,
    risk_refusal_to_json,
)
from chalicelib.entrypoints.json_body import BadRequest
from chalicelib.entrypoints.replace_request import parse_replace_request
from chalicelib.entrypoints.request_models import FieldError, InvalidOrder
from chalicelib.entrypoints.response_models import error_body, invalid_order_to_json, order_to_json
from chalicelib.observability import count, logger, metrics, tracer
from chalicelib.service import replace_orders
from chalicelib.service.dependencies import Dependencies


@tracer.capture_method
def replace_order(request: Request, order_id: str, dependencies: Dependencies) -> Response:
    correlation_id = correlation_id_for(request.headers, request.context)
    account_id = account_of(request)
    if account_id is None:
        return json_response(401, NO_ACCOUNT_BODY, correlation_id)
    if not is_order_id(order_id):
        return json_response(404, NOT_FOUND_BODY, correlation_id)
    logger.thread_safe_append_keys(correlation_id=correlation_id, account_id=account_id, order_id=order_id)
    try:
        return _replace_order(account_id, order_id, request.raw_body, correlation_id, dependencies)
    finally:
        metrics.flush_metrics()
        logger.thread_safe_clear_keys()


def _replace_order(
    account_id: str, order_id: str, raw_body: bytes | str | None, correlation_id: str, dependencies: Dependencies
) -> Response:
    try:
        changes = parse_replace_request(raw_body, order_limits())
        result = replace_orders.replace_order(order_id, account_id, changes, dependencies, correlation_id)
    except BadRequest as exc:
        return json_response(exc.status, error_body(str(exc)), correlation_id)
    except InvalidOrder as exc:
        return json_response(422, invalid_order_to_json(exc), correlation_id)
    except OrderNotFound:
        return json_response(404, NOT_FOUND_BODY, correlation_id)
    except OrderNotReplaceable as exc:
        message = f"Order is {exc.status} and cannot be replaced: {exc.why}"
        return json_response(409, error_body(message), correlation_id)
    except IdempotencyConflict as exc:
        return json_response(409, error_body(str(exc)), correlation_id)
    except ReplaceTermsRefused as exc:
        errors = [FieldError(problem.field, problem.message) for problem in exc.problems]
        return json_response(422, invalid_order_to_json(InvalidOrder(errors)), correlation_id)
    except ExpiryRefused as exc:
        return json_response(
            422, invalid_order_to_json(InvalidOrder([FieldError(exc.field, str(exc))])), correlation_id
        )
    except RiskLimitExceeded as exc:
        count("OrdersRefusedByRiskLimit")
        return json_response(422, risk_refusal_to_json(exc), correlation_id)
    except ReferencePriceUnavailable as exc:
        logger.warning("replace refused: no reference price", reason=str(exc))
        return json_response(503, error_body(NO_REFERENCE_PRICE), correlation_id)
    except (StorageUnavailable, ConcurrentModification):
        # Nothing was stored, or it cannot be told: a retry with the same client_order_id gets it.
        logger.exception("order not replaced")
        return json_response(503, UNAVAILABLE_BODY, correlation_id)
    if result.created:
        count("OrdersReplaced")
        logger.info("replace requested", replacement_id=result.replacement.id)
    return json_response(202 if result.created else 200, order_to_json(result.replacement), correlation_id)
