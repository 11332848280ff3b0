"""Order events as clients receive them, on GET /events and on the WebSocket stream: the models and the JSON."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.domain.order_events import OrderEvent, OrderEventType
from chalicelib.entrypoints.response_models import ExecutionResponse, OrderResponse, Timestamp


class OrderEventResponse(BaseModel):
    """One change of an order as the client sees it."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(
        description="The event's place in the account's log (20 digits, ascending): unique, and the cursor to resume"
        " after it (GET /events?after=, the stream's listen)"
    )
    type: OrderEventType = Field(
        description="reopened: an operator made a failed order pending again, to place it anew"
    )
    time: Timestamp = Field(description="When the order changed (its updated_at)")
    order: OrderResponse = Field(description="The order as GET /orders/{order_id} showed it right after this change")
    execution: ExecutionResponse | None = Field(
        description="The execution report of a fill (null if the fill is known only from the exchange's status"
        " answer); null for every other type"
    )


class OrderEventPage(BaseModel):
    """The caller's order events after a cursor, oldest first: the answer of GET /events."""

    model_config = ConfigDict(frozen=True)

    events: list[OrderEventResponse]
    next: str = Field(
        description="Pass as ?after= for the events after these: the last event's id, or the cursor given when"
        " there were none. Always present; polling with it never skips or repeats an event"
    )


def event_body(event: OrderEvent) -> dict[str, Any]:
    """The event's client JSON without its id (the log gives the id): what the log stores as its body."""
    body = OrderEventResponse(
        id="",
        type=event.type,
        time=event.time,
        order=OrderResponse.of(event.order),
        execution=None if event.execution is None else ExecutionResponse.of(event.execution),
    )
    return body.model_dump(mode="json", exclude={"id"})
