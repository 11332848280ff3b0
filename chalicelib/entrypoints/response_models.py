"""HTTP responses out: the models of every JSON body we answer (orders, pages of orders, executions, errors) and the
functions that turn domain objects into those bodies."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from chalicelib.adapters.repository import ExecutionCursor, OrderPage
from chalicelib.domain.failure_reasons import client_failure_reason
from chalicelib.domain.model import (
    ExecType,
    ExecutionReport,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from chalicelib.entrypoints.execution_query import encode_execution_cursor
from chalicelib.entrypoints.request_models import ORDER_ID_PATTERN, InvalidOrder, encode_cursor


def _timestamp(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Response fields take the domain's own values; the serializers make them the
# JSON the API has always sent (millisecond UTC timestamps ending in Z,
# amounts as JSON numbers), and the schemas say exactly that.
Timestamp = Annotated[
    datetime,
    PlainSerializer(_timestamp, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "example": "2024-05-02T14:03:07.250Z"}),
]


def _amount(value: Decimal) -> float | None:
    # A stored value no JSON number can carry (1e400 becomes float inf, which
    # json.dumps writes as Infinity: not JSON, and the whole page breaks; a
    # NaN) is null. Only rows stored before the feed's checks can hold one;
    # every Amount field is nullable.
    number = float(value) if value.is_finite() else math.inf
    return number if math.isfinite(number) else None


Amount = Annotated[Decimal, AllowInfNan(True), PlainSerializer(_amount, return_type=float)]
OrderId = Annotated[str, Field(pattern=ORDER_ID_PATTERN, json_schema_extra={"format": "uuid"})]


class OrderResponse(BaseModel):
    """An order: the answer of POST /orders and GET /orders/{order_id}."""

    model_config = ConfigDict(frozen=True)

    id: OrderId = Field(description="The order id; from client_order_id if one was given")
    created_at: Timestamp
    updated_at: Timestamp
    type: OrderType
    side: Side
    instrument: str
    quantity: int
    limit_price: Amount | None
    stop_price: Amount | None = Field(description="The trigger price of a stop or stop_limit order; null otherwise")
    time_in_force: TimeInForce = Field(description="Orders placed before time in force existed are day orders")
    expires_at: Timestamp | None = Field(description="When a gtd order expires (UTC, to the second); null otherwise")
    client_order_id: str | None
    status: OrderStatus
    placed_at: Timestamp | None = Field(description="When the exchange accepted the order")
    failure_reason: str | None = Field(
        description="Why the order is failed or rejected: 'rejected by the exchange', 'exchange unreachable',"
        " 'placement failed', or, for a replacement whose original was done first, 'too late to replace';"
        " null otherwise"
    )
    filled_quantity: int
    remaining_quantity: int = Field(description="0 once the order is done, filled or not")
    average_fill_price: Amount | None
    reopened_at: Timestamp | None = Field(
        default=None,
        description="When an operator last reopened this failed order to place it again; null if never",
    )
    replaces: OrderId | None = Field(
        default=None, description="For an order made by PATCH /orders/{id}: the id of the order it replaces"
    )
    replaced_by: OrderId | None = Field(
        default=None,
        description="The replacement's id while this order is pending_replace, and once it is replaced; null"
        " otherwise (also after a replace the exchange refused)",
    )

    @classmethod
    def of(cls, order: Order) -> OrderResponse:
        terms = order.terms
        return cls(
            id=order.id,
            created_at=order.created_at,
            updated_at=order.updated_at,
            type=terms.type,
            side=terms.side,
            instrument=terms.instrument,
            quantity=terms.quantity,
            limit_price=terms.limit_price,
            stop_price=terms.stop_price,
            time_in_force=terms.time_in_force,
            expires_at=terms.expires_at,
            client_order_id=terms.client_order_id,
            status=order.status,
            placed_at=order.placed_at,
            # The stored detail (exchange and transport text) is for operators and logs only.
            failure_reason=client_failure_reason(order.failure_reason),
            filled_quantity=order.filled_quantity,
            remaining_quantity=order.remaining_quantity,
            average_fill_price=order.average_fill_price,
            reopened_at=order.reopened_at,
            replaces=order.replaces,
            replaced_by=order.replaced_by,
        )


class OrderListResponse(BaseModel):
    """A page of the caller's orders, newest first: the answer of GET /orders."""

    model_config = ConfigDict(frozen=True)

    orders: list[OrderResponse]
    next: str | None = Field(
        description="Pass as ?next= (with the same filters) for the following page; null on the last page."
        " A page may hold fewer than limit orders, even none, and still have a next: only null means the end"
    )


class ExecutionResponse(BaseModel):
    """One execution report of an order, as the exchange sent it."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="The exchange's execution id")
    type: ExecType
    quantity: int = Field(description="Shares filled by this report (0 if it fills none)")
    price: Amount | None
    time: Timestamp
    cumulative_quantity: int
    average_price: Amount | None

    @classmethod
    def of(cls, report: ExecutionReport) -> ExecutionResponse:
        return cls(
            id=report.exec_id,
            type=report.exec_type,
            quantity=report.last_qty,
            price=report.last_price,
            time=report.transact_time,
            cumulative_quantity=report.cum_qty,
            average_price=report.avg_price,
        )


class ExecutionListResponse(BaseModel):
    """An order's execution reports, oldest first: the answer of GET /orders/{order_id}/executions."""

    model_config = ConfigDict(frozen=True)

    order_id: OrderId
    executions: list[ExecutionResponse]
    next: str | None = Field(
        description="Pass as ?after= for the executions after these; null when there are no more (yet)"
    )


class ErrorResponse(BaseModel):
    """Any error we answer ourselves (400, 404, 409, 413, 500, 503)."""

    model_config = ConfigDict(frozen=True)

    message: str


class FieldErrorResponse(BaseModel):
    """One invalid field of a request body."""

    model_config = ConfigDict(frozen=True)

    field: str = Field(description='The field\'s name, or "body"')
    message: str


class ValidationErrorResponse(BaseModel):
    """A JSON object whose fields are missing or invalid (422): every problem, each with its field."""

    model_config = ConfigDict(frozen=True)

    message: str = Field(description="All problems in one sentence")
    errors: list[FieldErrorResponse]

    @classmethod
    def of(cls, invalid: InvalidOrder) -> ValidationErrorResponse:
        return cls(
            message=f"Invalid {invalid.subject}: " + "; ".join(e.message for e in invalid.errors),
            errors=[FieldErrorResponse(field=e.field, message=e.message) for e in invalid.errors],
        )


class GatewayErrorResponse(BaseModel):
    """An error Chalice answers before our code runs, e.g. 415 for a Content-Type other than application/json."""

    model_config = ConfigDict(frozen=True)

    Code: str
    Message: str


def error_body(message: str) -> dict[str, Any]:
    return ErrorResponse(message=message).model_dump(mode="json")


def order_to_json(order: Order) -> dict[str, Any]:
    return OrderResponse.of(order).model_dump(mode="json")


def order_page_to_json(page: OrderPage) -> dict[str, Any]:
    listing = OrderListResponse(
        orders=[OrderResponse.of(order) for order in page.orders],
        next=encode_cursor(page.next) if page.next else None,
    )
    return listing.model_dump(mode="json")


def execution_to_json(report: ExecutionReport) -> dict[str, Any]:
    return ExecutionResponse.of(report).model_dump(mode="json")


def executions_to_json(
    order_id: str, reports: list[ExecutionReport], next_cursor: ExecutionCursor | None = None
) -> dict[str, Any]:
    listing = ExecutionListResponse(
        order_id=order_id,
        executions=[ExecutionResponse.of(r) for r in reports],
        next=encode_execution_cursor(next_cursor) if next_cursor else None,
    )
    return listing.model_dump(mode="json")


def invalid_order_to_json(invalid: InvalidOrder) -> dict[str, Any]:
    return ValidationErrorResponse.of(invalid).model_dump(mode="json")
