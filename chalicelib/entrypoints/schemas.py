"""The HTTP contract: request and response models, and errors that name each offending field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from chalicelib.domain.model import ExecType, ExecutionReport, Order, OrderTerms, OrderType, Side

# Sanity bounds: far beyond any real order, but they keep a number from
# overflowing DynamoDB's 38 digits or turning into infinity on its way out.
MAX_QUANTITY = 1_000_000_000
MAX_PRICE = Decimal("1000000000")


class BadRequest(Exception):
    """The body is not a JSON object at all (400)."""


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class InvalidOrder(Exception):
    """The body is a JSON object, but fields are missing or invalid (422)."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


def _price_from_json_number(value: Any) -> Any:
    # JSON integers arrive as int; decimals as Decimal (parse_float below).
    # A bool is an int to Python, but never a price.
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return value


Price = Annotated[
    Decimal,
    BeforeValidator(_price_from_json_number),
    Field(gt=0, le=MAX_PRICE, decimal_places=2, allow_inf_nan=False),
]


class OrderRequest(BaseModel):
    """Body of POST /orders."""

    # strict: "5" is not a quantity and 1.0 is not an integer; clients must say what they mean.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: Literal["market", "limit"]
    side: Literal["buy", "sell"]
    instrument: str = Field(pattern=r"^[A-Z0-9]{12}$", description="ISIN: 12 uppercase letters and digits")
    quantity: int = Field(gt=0, le=MAX_QUANTITY)
    limit_price: Price | None = None
    client_order_id: str | None = Field(default=None, min_length=1, max_length=48, pattern=r"^[^\x00-\x1f\x7f]+$")

    def to_terms(self) -> OrderTerms:
        return OrderTerms(
            type=OrderType(self.type),
            side=Side(self.side),
            instrument=self.instrument,
            quantity=self.quantity,
            limit_price=self.limit_price,
            client_order_id=self.client_order_id,
        )


_MESSAGES = {
    "missing": "{field} is required",
    "extra_forbidden": "{field} is not a known field",
    "literal_error": "{field} must be one of {expected}",
    "string_pattern_mismatch": "{field} has the wrong format",
    "int_type": "{field} must be an integer",
    "greater_than": "{field} must be greater than {gt}",
    "less_than_equal": "{field} must be at most {le}",
    "decimal_max_places": "{field} must have at most 2 decimal places",
    "is_instance_of": "{field} must be a JSON number",
    "decimal_type": "{field} must be a JSON number",
    "string_type": "{field} must be a string",
    "string_too_long": "{field} must be at most {max_length} characters",
    "string_too_short": "{field} must not be empty",
    "finite_number": "{field} must be a finite number",
}
_FIELD_HINTS = {
    "instrument": "instrument must be an ISIN: exactly 12 characters, uppercase letters and digits",
    "client_order_id": "client_order_id must be 1 to 48 characters without control characters",
}


def _field_error(error: Any) -> FieldError:
    field = str(error["loc"][0]) if error["loc"] else "body"
    kind = error["type"]
    if kind == "string_pattern_mismatch" and field in _FIELD_HINTS:
        return FieldError(field, _FIELD_HINTS[field])
    template = _MESSAGES.get(kind)
    if template is None:
        return FieldError(field, f"{field}: {error['msg']}")
    # ctx holds the constraint (e.g. le=Decimal('1000000000')); show it as a plain number.
    context = {
        key: str(value).removeprefix("Decimal('").removesuffix("')") for key, value in (error.get("ctx") or {}).items()
    }
    return FieldError(field, template.format(field=field, **context))


def _cross_field_errors(body: dict[str, Any]) -> list[FieldError]:
    price = body.get("limit_price")
    if body.get("type") == "limit" and price is None:
        return [FieldError("limit_price", "limit_price is required for type limit")]
    if body.get("type") == "market" and price is not None:
        return [FieldError("limit_price", "limit_price must be absent or null for type market")]
    return []


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def parse_json_object(raw_body: bytes | str | None) -> dict[str, Any]:
    if not raw_body:
        raise BadRequest("the request body must be a JSON object")
    try:
        # Decimal keeps 10.1 as 10.1 (a float would not); NaN and Infinity are not JSON.
        body = json.loads(raw_body, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def parse_order_request(raw_body: bytes | str | None) -> OrderTerms:
    """OrderTerms from a POST /orders body; raises BadRequest or InvalidOrder naming every problem."""
    body = parse_json_object(raw_body)
    cross_field = _cross_field_errors(body)
    try:
        request = OrderRequest.model_validate(body)
    except ValidationError as exc:
        errors = [_field_error(e) for e in exc.errors()]
        named = {e.field for e in cross_field}
        raise InvalidOrder(cross_field + [e for e in errors if e.field not in named]) from None
    if cross_field:
        raise InvalidOrder(cross_field)
    return request.to_terms()


def _timestamp(value: Any) -> str | None:
    if value is None:
        return None
    return str(value.isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def order_to_json(order: Order) -> dict[str, Any]:
    terms = order.terms
    return {
        "id": order.id,
        "created_at": _timestamp(order.created_at),
        "updated_at": _timestamp(order.updated_at),
        "type": terms.type.value,
        "side": terms.side.value,
        "instrument": terms.instrument,
        "quantity": terms.quantity,
        "limit_price": None if terms.limit_price is None else float(terms.limit_price),
        "client_order_id": terms.client_order_id,
        "status": order.status.value,
        "placed_at": _timestamp(order.placed_at),
        "failure_reason": order.failure_reason,
        "filled_quantity": order.filled_quantity,
        "remaining_quantity": order.remaining_quantity,
        "average_fill_price": None if order.average_fill_price is None else float(order.average_fill_price),
    }


def execution_to_json(report: ExecutionReport) -> dict[str, Any]:
    return {
        "id": report.exec_id,
        "type": report.exec_type.value,
        "quantity": report.last_qty,
        "price": None if report.last_price is None else float(report.last_price),
        "time": _timestamp(report.transact_time),
        "cumulative_quantity": report.cum_qty,
        "average_price": None if report.avg_price is None else float(report.avg_price),
    }


DecimalText = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class ExecutionReportMessage(BaseModel):
    """An execution report as the feed bridge puts it on the stream (docs/execution-feed.md)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    seq: int = Field(ge=1)
    exec_id: str = Field(min_length=1, max_length=128)
    client_order_id: str = Field(min_length=1, max_length=64)
    exchange_order_id: str = Field(min_length=1, max_length=128)
    exec_type: ExecType
    last_qty: int = Field(ge=0)
    last_price: DecimalText | None = None
    cum_qty: int = Field(ge=0)
    leaves_qty: int = Field(ge=0)
    avg_price: DecimalText | None = None
    transact_time: AwareDatetime


def parse_execution_report(data: bytes) -> ExecutionReport:
    """The domain report from a Kinesis record's data; ValueError saying what is wrong otherwise."""
    try:
        message = ExecutionReportMessage.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'report'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"malformed execution report: {problems}") from None
    return ExecutionReport(
        exec_id=message.exec_id,
        order_id=message.client_order_id,
        exchange_order_id=message.exchange_order_id,
        exec_type=message.exec_type,
        last_qty=message.last_qty,
        last_price=message.last_price,
        cum_qty=message.cum_qty,
        leaves_qty=message.leaves_qty,
        avg_price=message.avg_price,
        transact_time=message.transact_time,
        seq=message.seq,
    )
