"""The PATCH /orders/{id} body: what a replace may change, each field held to POST /orders' rules (422 naming it)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from chalicelib.domain.order_terms import TimeInForce
from chalicelib.domain.replace import TermChanges
from chalicelib.entrypoints.json_body import parse_json_object
from chalicelib.entrypoints.request_models import (
    MAX_QUANTITY,
    ClientOrderId,
    ExpiryTime,
    FieldError,
    InvalidOrder,
    OrderLimits,
    Price,
    field_error,
    overlong_number_problem,
)

# What a replace changes; type, side and instrument are the original's for good.
CHANGEABLE_FIELDS = ("quantity", "limit_price", "stop_price", "time_in_force", "expires_at")
FIXED_FIELDS = ("type", "side", "instrument")


class ReplaceRequest(BaseModel):
    """Body of PATCH /orders/{id}: at least one of the changeable fields; absent or null keeps the original's."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={
            "examples": [
                {"quantity": 20, "limit_price": 186.50, "client_order_id": "my-key-1-r1"},
                {"time_in_force": "gtd", "expires_at": "2026-12-04T20:00:00Z"},
            ]
        },
    )

    quantity: Annotated[int, Field(gt=0, le=MAX_QUANTITY), BeforeValidator(overlong_number_problem)] | None = Field(
        default=None,
        description="The new total quantity, fills included (as in FIX): above what the order has filled",
    )
    limit_price: Price | None = Field(default=None, description="For types limit and stop_limit only")
    stop_price: Price | None = Field(default=None, description="For types stop and stop_limit only")
    time_in_force: Literal["day", "gtc", "ioc", "fok", "gtd"] | None = Field(
        default=None, description="Leaving gtd drops the expiry; stop types take neither ioc nor fok"
    )
    expires_at: ExpiryTime | None = Field(
        default=None, description="For gtd (the new time in force or the original's): in the future, 90 days at most"
    )
    client_order_id: ClientOrderId | None = Field(
        default=None,
        description="The replacement's own idempotency key: a second PATCH with it returns the same replacement"
        " (200), or 409 if it names another order or other terms",
    )


def _replace_field_error(error: Any) -> FieldError:
    found = field_error(error)
    if error["type"] == "extra_forbidden" and found.field in FIXED_FIELDS:
        return FieldError(
            found.field, f"{found.field} cannot be changed by a replace: cancel the order, place a new one"
        )
    return found


def parse_replace_request(raw_body: bytes | str | None, limits: OrderLimits | None = None) -> TermChanges:
    """TermChanges from a PATCH /orders/{id} body; BadRequest or InvalidOrder naming every problem.

    Whether the changes suit the order (its type's prices, its fills) needs
    the order: that is the replace's own check (domain/replace.py).
    """
    body = parse_json_object(raw_body)
    try:
        request = ReplaceRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidOrder([_replace_field_error(e) for e in exc.errors()]) from None
    limits = limits or OrderLimits()
    errors = []
    if all(getattr(request, name) is None for name in CHANGEABLE_FIELDS):
        errors.append(FieldError("body", f"send at least one of {', '.join(CHANGEABLE_FIELDS)} to change"))
    if request.quantity is not None and request.quantity > limits.max_quantity:
        errors.append(FieldError("quantity", f"quantity must be at most {limits.max_quantity} (maximum order size)"))
    for name, price in (("limit_price", request.limit_price), ("stop_price", request.stop_price)):
        if price is not None and price > limits.max_limit_price:
            errors.append(FieldError(name, f"{name} must be at most {limits.max_limit_price} (price sanity bound)"))
    if errors:
        raise InvalidOrder(errors)
    return TermChanges(
        quantity=request.quantity,
        limit_price=request.limit_price,
        stop_price=request.stop_price,
        time_in_force=None if request.time_in_force is None else TimeInForce(request.time_in_force),
        expires_at=request.expires_at,
        client_order_id=request.client_order_id,
    )
