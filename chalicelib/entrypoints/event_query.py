"""The order events' REST side: GET /events (the caller's events after a cursor) and POST /stream/tokens.

The cursor is an event id (chalicelib/adapters/streaming.py): the position in
the account's log of the last event a client has seen. A page's `next` is the
id of its last event, or the cursor it was asked with when it has none, so
polling with `next` never skips and never repeats an event.

A stream token lets a browser, which cannot set headers on a WebSocket,
connect to the order stream as the key that asked for it (`?token=`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chalice.app import Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.adapters.streaming import EVENT_ID_DIGITS, START_POSITION, LoggedEvent, event_id_of, sequence_of
from chalicelib.entrypoints.http import NO_ACCOUNT_BODY, account_of, json_response
from chalicelib.entrypoints.request_models import FieldError, InvalidQuery, field_error, single_values
from chalicelib.entrypoints.response_models import Timestamp, error_body, invalid_order_to_json
from chalicelib.observability import logger
from chalicelib.service import stream
from chalicelib.service.dependencies import Dependencies

DEFAULT_EVENTS_PAGE = 100
MAX_EVENTS_PAGE = 500
EVENT_ID_PATTERN = rf"^[0-9]{{{EVENT_ID_DIGITS}}}$"
AFTER_PROBLEM = (
    f"after must be an event id ({EVENT_ID_DIGITS} digits): the next value of a previous page,"
    " or the id of an event you received"
)
UNKNOWN_AFTER_PROBLEM = "after names no event of yours: it is past your latest event"
UNAVAILABLE_BODY = error_body("Order events are temporarily unavailable, retry later")
TOKENS_UNAVAILABLE_BODY = error_body("Stream tokens are temporarily unavailable, retry later")


class ListEventsQuery(BaseModel):
    """Query parameters of GET /events."""

    # Not strict: query parameters are text, so "50" must read as 50.
    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(default=DEFAULT_EVENTS_PAGE, ge=1, le=MAX_EVENTS_PAGE, description="Events per page")
    after: str | None = Field(
        default=None,
        pattern=EVENT_ID_PATTERN,
        description="The `next` of the previous page (or the id of the last event you have), to get the events"
        " after it. Without it: from the oldest event kept",
    )


@dataclass(frozen=True)
class EventsQuery:
    limit: int
    after: int | None  # a sequence number; None: from the oldest event kept


def parse_events_query(params: Mapping[str, Sequence[str]] | None) -> EventsQuery:
    """The page GET /events asks for (name -> its values); InvalidQuery names each problem."""
    values = single_values(params)
    try:
        query = ListEventsQuery.model_validate(values)
    except ValidationError as exc:
        errors = [field_error(error) for error in exc.errors()]
        # The pattern's own message says "wrong format"; say what the value must be instead.
        raise InvalidQuery([FieldError("after", AFTER_PROBLEM) if e.field == "after" else e for e in errors]) from None
    after = None if query.after is None else sequence_of(query.after)
    if query.after is not None and after is None:
        # The pattern admits only what sequence_of reads; kept in step with it here all the same.
        raise InvalidQuery([FieldError("after", AFTER_PROBLEM)])
    return EventsQuery(limit=query.limit, after=after)


def events_page_to_json(events: Sequence[LoggedEvent], after: int | None) -> dict[str, Any]:
    """{"events": [...], "next": ...}: next is the last event's id, else the cursor asked with, else the start."""
    next_cursor = events[-1].event_id if events else event_id_of(START_POSITION if after is None else after)
    return {"events": [event.to_json() for event in events], "next": next_cursor}


def list_events(request: Request, dependencies: Dependencies) -> Response:
    account_id = account_of(request)
    if account_id is None:
        return json_response(401, NO_ACCOUNT_BODY)
    params = request.query_params
    try:
        query = parse_events_query({name: params.getlist(name) for name in params} if params else None)
    except InvalidQuery as exc:
        return json_response(422, invalid_order_to_json(exc))
    event_log = dependencies.stream.event_log
    try:
        events = event_log.page(account_id, START_POSITION if query.after is None else query.after, query.limit)
        # An empty page is where a cursor past the account's last event shows:
        # a page with events proves its cursor is below the head (which only
        # grows), so only an empty one costs the second read.
        if not events and query.after is not None and query.after > event_log.head(account_id):
            invalid = InvalidQuery([FieldError("after", UNKNOWN_AFTER_PROBLEM)])
            return json_response(422, invalid_order_to_json(invalid))
    except StorageUnavailable:
        logger.exception("order events not read", account_id=account_id)
        return json_response(503, UNAVAILABLE_BODY)
    return json_response(200, events_page_to_json(events, query.after))


class StreamTokenResponse(BaseModel):
    """A single-use token to connect to the order stream: the answer of POST /stream/tokens."""

    model_config = ConfigDict(frozen=True)

    token: str = Field(description="Pass it as ?token= on the WebSocket URL; it connects once")
    expires_at: Timestamp = Field(description="Unused by then, it connects no more")


def key_id_of(request: Request) -> str | None:
    """The id of the caller's API key, as the authorizer put it in the request context."""
    authorizer = request.context.get("authorizer") or {}
    key_id = authorizer.get("key_id") if isinstance(authorizer, dict) else None
    return key_id if isinstance(key_id, str) and key_id else None


def create_stream_token(request: Request, dependencies: Dependencies) -> Response:
    """201 {"token", "expires_at"}: the token stands for the caller's key (its revocation closes the stream)."""
    account_id, key_id = account_of(request), key_id_of(request)
    if account_id is None or key_id is None:
        return json_response(401, NO_ACCOUNT_BODY)
    try:
        token, expires_at = stream.issue_token(account_id, key_id, dependencies)
    except StorageUnavailable:
        logger.exception("stream token not issued", account_id=account_id)
        return json_response(503, TOKENS_UNAVAILABLE_BODY)
    return json_response(201, StreamTokenResponse(token=token, expires_at=expires_at).model_dump(mode="json"))
