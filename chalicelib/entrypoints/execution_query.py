"""GET /orders/{order_id}/executions' query: the page size, the cursor clients pass back, 422s naming each."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chalicelib.adapters.repository import ExecutionCursor
from chalicelib.entrypoints.request_models import FieldError, InvalidQuery, field_error, single_values

DEFAULT_EXECUTIONS_PAGE = 100
MAX_EXECUTIONS_PAGE = 500
# A cursor holds an exec_id (at most 128 characters, see feed_message.py) as
# UTF-8 JSON in base64: 1,024 characters hold the longest with room to spare.
EXECUTION_CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,1024}$"
_AFTER_PROBLEM = "after must be the next value of a previous page of this order's executions, unchanged"


class ListExecutionsQuery(BaseModel):
    """Query parameters of GET /orders/{order_id}/executions."""

    # Not strict: query parameters are text, so "50" must read as 50.
    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(default=DEFAULT_EXECUTIONS_PAGE, ge=1, le=MAX_EXECUTIONS_PAGE, description="Executions per page")
    after: str | None = Field(
        default=None,
        pattern=EXECUTION_CURSOR_PATTERN,
        description="The `next` of the previous page, to get the executions after it",
    )


@dataclass(frozen=True)
class ExecutionsQuery:
    limit: int
    after: ExecutionCursor | None


def encode_execution_cursor(cursor: ExecutionCursor) -> str:
    """Opaque to clients: the last execution of a page, as URL-safe base64 without padding."""
    fields = [cursor.transact_time.isoformat(), cursor.seq, cursor.exec_id]
    text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_execution_cursor(text: str) -> ExecutionCursor:
    """The cursor encode_execution_cursor made; ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        time_text, seq, exec_id = json.loads(raw)
        transact_time = datetime.fromisoformat(time_text)
    except (binascii.Error, UnicodeDecodeError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError("not a cursor") from exc
    # bool is an int to Python; a cursor we wrote never holds one.
    if transact_time.tzinfo is None or type(seq) is not int or not isinstance(exec_id, str) or not exec_id:
        raise ValueError("not a cursor")
    return ExecutionCursor(transact_time.astimezone(UTC), seq, exec_id)


def parse_executions_query(params: Mapping[str, Sequence[str]] | None) -> ExecutionsQuery:
    """The page GET /orders/{order_id}/executions asks for (name -> its values); InvalidQuery names each problem."""
    values = single_values(params)
    try:
        query = ListExecutionsQuery.model_validate(values)
    except ValidationError as exc:
        errors = [field_error(error) for error in exc.errors()]
        # The pattern's own message says "wrong format"; say what the value must be instead.
        raise InvalidQuery([FieldError("after", _AFTER_PROBLEM) if e.field == "after" else e for e in errors]) from None
    after = None
    if query.after is not None:
        try:
            after = decode_execution_cursor(query.after)
        except ValueError:
            raise InvalidQuery([FieldError("after", _AFTER_PROBLEM)]) from None
    return ExecutionsQuery(limit=query.limit, after=after)
