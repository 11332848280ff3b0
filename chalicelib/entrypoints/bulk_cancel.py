"""DELETE /orders: cancel every open order of the caller; 207 with each order's own answer (service/cancel_all.py).

Each result carries the HTTP status DELETE /orders/{id} would have answered
for that order (200 canceled at once, 202 pending_cancel, 409 already done,
503 storage failed for it) and the order as it is now. One request handles
at most CANCEL_ALL_MAX_ORDERS orders within Timings.cancel_all_budget; when
more may be open, `more` is true and `next` is where the following request
goes on (`?after=<next>`). Repeating the request, with or without `after`,
is safe: an order already pending_cancel answers 202 again, and the exchange
is asked at most once per cancel interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from chalice.app import Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.entrypoints.http import (
    NO_ACCOUNT_BODY,
    NOT_FOUND_BODY,
    UNAVAILABLE_BODY,
    account_of,
    correlation_id_for,
    json_response,
)
from chalicelib.entrypoints.request_models import (
    ORDER_ID_PATTERN,
    FieldError,
    InvalidQuery,
    field_error,
    single_values,
)
from chalicelib.entrypoints.response_models import OrderId, OrderResponse, invalid_order_to_json
from chalicelib.observability import logger
from chalicelib.service.cancel_all import (
    CANCEL_ALL_MAX_ORDERS,
    CancelAll,
    CancelVerdict,
    OrderCancel,
    cancel_all_orders,
)
from chalicelib.service.dependencies import Dependencies

AFTER_PROBLEM = "after must be the next value of a previous DELETE /orders answer (an order id), unchanged"
_HTTP_STATUS: dict[CancelVerdict, Literal[200, 202, 404, 409, 503]] = {
    CancelVerdict.CANCELED: 200,
    CancelVerdict.PENDING_CANCEL: 202,
    CancelVerdict.NOT_FOUND: 404,
    CancelVerdict.NOT_CANCELABLE: 409,
    CancelVerdict.UNAVAILABLE: 503,
}


class CancelAllQuery(BaseModel):
    """Query parameters of DELETE /orders."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after: str | None = Field(
        default=None,
        pattern=ORDER_ID_PATTERN,
        description="The `next` of the previous answer (when it said `more`), to go on with the open orders after it",
    )


class OrderCancelResult(BaseModel):
    """One open order's cancel, as DELETE /orders/{order_id} would have answered it."""

    model_config = ConfigDict(frozen=True)

    id: OrderId
    status: Literal[200, 202, 404, 409, 503] = Field(
        description="The HTTP status DELETE /orders/{order_id} would have answered: 200 canceled at once, 202"
        " pending_cancel (the exchange is asked), 409 already done (filled, canceled, ... a moment ago), 503 this"
        " order could not be canceled now (storage unavailable: repeat the request)"
    )
    order: OrderResponse = Field(description="The order after the cancel (as last read if it failed)")
    message: str | None = Field(description="What went wrong, for 404, 409 and 503; null for 200 and 202")


class CancelAllResponse(BaseModel):
    """The answer of DELETE /orders (207): one result per open order handled."""

    model_config = ConfigDict(frozen=True)

    results: list[OrderCancelResult]
    more: bool = Field(
        description="True if open orders may be left that this request did not get to (it handles at most"
        f" {CANCEL_ALL_MAX_ORDERS}, within a few seconds): repeat it with ?after=<next>"
    )
    next: OrderId | None = Field(description="With more: pass as ?after= to go on; null otherwise")


def parse_cancel_all_query(params: Mapping[str, Sequence[str]] | None) -> str | None:
    """The order id to go on after, if any; InvalidQuery naming each problem."""
    values = single_values(params)
    try:
        query = CancelAllQuery.model_validate(values)
    except ValidationError as exc:
        errors = [field_error(error) for error in exc.errors()]
        raise InvalidQuery([FieldError("after", AFTER_PROBLEM) if e.field == "after" else e for e in errors]) from None
    return query.after


def _result(cancel: OrderCancel) -> OrderCancelResult:
    message = None
    if cancel.verdict is CancelVerdict.NOT_CANCELABLE:
        message = f"Order is {cancel.done_status} and can no longer be canceled"
    elif cancel.verdict is CancelVerdict.NOT_FOUND:
        message = NOT_FOUND_BODY["message"]
    elif cancel.verdict is CancelVerdict.UNAVAILABLE:
        message = UNAVAILABLE_BODY["message"]
    return OrderCancelResult(
        id=cancel.order.id,
        status=_HTTP_STATUS[cancel.verdict],
        order=OrderResponse.of(cancel.order),
        message=message,
    )


def cancel_all_to_json(outcome: CancelAll) -> dict[str, Any]:
    answer = CancelAllResponse(
        results=[_result(cancel) for cancel in outcome.cancels],
        more=outcome.resume_after is not None,
        next=outcome.resume_after,
    )
    return answer.model_dump(mode="json")


def cancel_all(request: Request, dependencies: Dependencies) -> Response:
    """207 with each open order's result (none open: empty); 503 if the open orders cannot be listed or read."""
    correlation_id = correlation_id_for(request.headers, request.context)
    account_id = account_of(request)
    if account_id is None:
        return json_response(401, NO_ACCOUNT_BODY, correlation_id)
    params = request.query_params
    try:
        after = parse_cancel_all_query({name: params.getlist(name) for name in params} if params else None)
    except InvalidQuery as exc:
        return json_response(422, invalid_order_to_json(exc), correlation_id)
    try:
        outcome = cancel_all_orders(account_id, dependencies, after=after)
    except StorageUnavailable:
        logger.exception("open orders not listed for cancel-all", account_id=account_id)
        return json_response(503, UNAVAILABLE_BODY, correlation_id)
    logger.info("cancel-all", account_id=account_id, orders=len(outcome.cancels), more=outcome.resume_after is not None)
    return json_response(207, cancel_all_to_json(outcome), correlation_id)
