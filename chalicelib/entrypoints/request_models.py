"""HTTP requests in: the POST /orders body and GET /orders query models, the checks that keep a hostile body from
costing us anything, the page cursor clients pass back, and the 422 errors that name each offending field."""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from chalicelib.adapters.repository import OrderCursor, OrderQuery
from chalicelib.domain.model import (
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    OrderStatus,
    OrderTerms,
    OrderType,
    Side,
    is_order_id,
)

# Sanity bounds: far beyond any real order, but they keep a number from
# overflowing DynamoDB's 38 digits or turning into infinity on its way out.
MAX_QUANTITY = 1_000_000_000
MAX_PRICE = Decimal("1000000000")
# Prices are whole cents: anything finer is refused (422), and every price is
# stored at exactly this exponent, so 100.1, 100.10 and 1.001e2 are one price
# in storage, at the exchange and for an idempotent replay alike.
PRICE_DECIMAL_PLACES = 2
PRICE_TICK = Decimal(1).scaleb(-PRICE_DECIMAL_PLACES)
# The longest number text we read, checked before it is converted: 1000000000.00
# is 13 characters, so this leaves room for trailing zeros and exponents while
# "100." and 16 KB of zeros never becomes a Decimal, a stored string or a log line.
MAX_NUMBER_CHARACTERS = 32

# A valid order is about 200 bytes. The limit keeps every later step (JSON
# parsing, validation, the list of errors we send back) small and fast
# whatever a client sends; API Gateway's own limit is 10 MB.
MAX_BODY_BYTES = 16 * 1024
# A valid order is one flat object (depth 1). Python's JSON parser recurses
# per level and would hit the interpreter's recursion limit at about 1000.
MAX_JSON_DEPTH = 32
# Longer unknown field names or duplicate keys are cut when echoed back.
MAX_ECHOED_NAME = 64

CLIENT_ORDER_ID_MAX_LENGTH = 48
# C0 and C1 controls, soft hyphen, zero-width characters, bidirectional
# marks, embeddings, overrides and isolates, line and paragraph separators,
# invisible operators and the byte order mark: characters that make one key
# look like another (or like nothing). The validator below checks the full
# Unicode categories; this pattern is what the OpenAPI document can state,
# and it is written so that Python, Rust (pydantic-core) and ECMAScript
# (JSON Schema) read it alike.
CLIENT_ORDER_ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]+$"
ORDER_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class BadRequest(Exception):
    """The body is not a JSON object we can read at all (400)."""

    status = 400


class PayloadTooLarge(BadRequest):
    """The body is longer than MAX_BODY_BYTES (413)."""

    status = 413


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class InvalidOrder(Exception):
    """The body is a JSON object, but fields are missing or invalid (422)."""

    subject = "order"

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class OverlongNumber:
    """A JSON number longer than MAX_NUMBER_CHARACTERS, left unconverted; any field it lands in refuses it."""

    length: int


def _overlong_number_problem(value: Any) -> Any:
    if isinstance(value, OverlongNumber):
        raise PydanticCustomError(
            "number_too_long",
            "it is {length} characters long, more than {limit}",
            {"length": value.length, "limit": MAX_NUMBER_CHARACTERS},
        )
    return value


def _price_from_json_number(value: Any) -> Any:
    # JSON integers arrive as int; decimals as Decimal (parse_float below).
    # A bool is an int to Python, but never a price.
    value = _overlong_number_problem(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return value


def _on_the_tick(price: Decimal) -> Decimal:
    # Exact: the bounds above leave at most PRICE_DECIMAL_PLACES places and 10 digits before the point.
    return price.quantize(PRICE_TICK)


Price = Annotated[
    Decimal,
    BeforeValidator(_price_from_json_number),
    Field(gt=0, le=MAX_PRICE, decimal_places=PRICE_DECIMAL_PLACES, allow_inf_nan=False),
    AfterValidator(_on_the_tick),
    # What pydantic would derive for a Decimal also allows strings, which the
    # strict model rejects: state the JSON number the model really accepts.
    WithJsonSchema(
        {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": int(MAX_PRICE),
        }
    ),
]

# Categories no client order id needs and that let two keys look alike:
# controls, format characters (zero-width, bidi controls), unpaired
# surrogates, line and paragraph separators. Spaces other than U+0020 (e.g.
# no-break space, ideographic space) look like it but are other keys.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _text_problem(value: str) -> str | None:
    for character in value:
        category = unicodedata.category(character)
        if category in _UNSAFE_CATEGORIES or (category == "Zs" and character != " "):
            return f"it has the invisible or control character U+{ord(character):04X}"
    # "é" as one code point or as "e" + combining accent: the same text to a
    # person, two different idempotency keys (and so two orders) to us.
    if not unicodedata.is_normalized("NFC", value):
        return "it is not in Unicode normalization form C"
    return None


def _visible_text(value: str) -> str:
    problem = _text_problem(value)
    if problem:
        raise PydanticCustomError("unsafe_text", "{problem}", {"problem": problem})
    return value


ClientOrderId = Annotated[
    str,
    Field(min_length=1, max_length=CLIENT_ORDER_ID_MAX_LENGTH, pattern=CLIENT_ORDER_ID_PATTERN),
    AfterValidator(_visible_text),
]


class OrderRequest(BaseModel):
    """Body of POST /orders."""

    # strict: "5" is not a quantity and 1.0 is not an integer; clients must say what they mean.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "type": "limit",
                    "side": "buy",
                    "instrument": "US0378331005",
                    "quantity": 10,
                    "limit_price": 187.25,
                    "client_order_id": "my-key-1",
                }
            ]
        },
    )

    type: Literal["market", "limit"]
    side: Literal["buy", "sell"]
    instrument: str = Field(pattern=r"^[A-Z0-9]{12}$", description="ISIN: 12 uppercase letters and digits")
    quantity: Annotated[int, BeforeValidator(_overlong_number_problem)] = Field(
        gt=0, le=MAX_QUANTITY, description="Number of shares"
    )
    limit_price: Price | None = Field(
        default=None,
        description=f"A JSON number greater than 0, at most {int(MAX_PRICE)}, with at most {PRICE_DECIMAL_PLACES}"
        f" decimal places, written in at most {MAX_NUMBER_CHARACTERS} characters; stored (and answered) to the"
        f" tick of {PRICE_TICK}. Required for type limit; absent or null for type market.",
    )
    client_order_id: ClientOrderId | None = Field(
        default=None,
        description=(
            "Idempotency key: a second POST with the same key returns the same order (200), or 409 if its terms"
            " differ. 1 to 48 characters, in Unicode NFC, without control, invisible or bidirectional-control"
            " characters and without spaces other than U+0020."
        ),
    )

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
    "decimal_max_places": "{field} must have at most {decimal_places} decimal places",
    "number_too_long": "{field} must be written in at most {limit} characters; it has {length}",
    "is_instance_of": "{field} must be a JSON number",
    "decimal_type": "{field} must be a JSON number",
    "string_type": "{field} must be a string",
    "string_too_long": "{field} must be at most {max_length} characters",
    "string_too_short": "{field} must not be empty",
    "finite_number": "{field} must be a finite number",
    "greater_than_equal": "{field} must be at least {ge}",
    "int_parsing": "{field} must be an integer",
    "timezone_aware": "{field} must include a UTC offset, e.g. 2024-05-02T14:03:07Z",
    "datetime_parsing": "{field} must be an ISO 8601 date-time with a UTC offset, e.g. 2024-05-02T14:03:07Z",
    "datetime_from_date_parsing": (
        "{field} must be an ISO 8601 date-time with a UTC offset, e.g. 2024-05-02T14:03:07Z"
    ),
}
_FIELD_HINTS = {
    "instrument": "instrument must be an ISIN: exactly 12 characters, uppercase letters and digits",
    "client_order_id": (
        "client_order_id must be 1 to 48 visible characters in Unicode NFC: no control, invisible or"
        " bidirectional-control characters and no spaces other than U+0020"
    ),
}


def _shown_name(name: str) -> str:
    """A client-chosen name as we may echo it: short, printable, nothing that reorders the text around it."""
    if len(name) <= MAX_ECHOED_NAME and name.isascii() and name.isprintable():
        return name
    shown = json.dumps(name[:MAX_ECHOED_NAME])[1:-1]  # escapes controls, non-ASCII and unpaired surrogates
    return shown + ("..." if len(name) > MAX_ECHOED_NAME else "")


def _field_error(error: Any) -> FieldError:
    field = _shown_name(str(error["loc"][0])) if error["loc"] else "body"
    kind = error["type"]
    if kind in {"string_pattern_mismatch", "unsafe_text"} and field in _FIELD_HINTS:
        hint = _FIELD_HINTS[field]
        # Say which character is wrong: an invisible one is hard to find otherwise.
        problem = _text_problem(error["input"]) if field == "client_order_id" else None
        return FieldError(field, f"{hint}; {problem}" if problem else hint)
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


def _bounded_decimal(text: str) -> Decimal | OverlongNumber:
    return OverlongNumber(len(text)) if len(text) > MAX_NUMBER_CHARACTERS else Decimal(text)


def _bounded_integer(text: str) -> int | OverlongNumber:
    return OverlongNumber(len(text)) if len(text) > MAX_NUMBER_CHARACTERS else int(text)


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of duplicate keys; another parser on the way
    # (a proxy, a log pipeline) may keep the first. One body, one meaning.
    body: dict[str, Any] = {}
    for key, value in pairs:
        if key in body:
            raise BadRequest(f'the request body\'s JSON object has the key "{_shown_name(key)}" more than once')
        body[key] = value
    return body


# Strings (also unterminated ones, so one scan is linear) and brackets.
_JSON_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def _too_deep(text: str) -> bool:
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for match in _JSON_STRUCTURE.finditer(text):
        first = match.group()[0]
        if first in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif first in "]}":
            depth -= 1
    return False


def _unpaired_surrogate(value: Any) -> str | None:
    # "\ud800" is valid JSON syntax but no Unicode text: it could not be
    # stored, logged or sent on as UTF-8. The nesting depth is already bounded.
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"\\u{ord(value[exc.start]):04x}"
        return None
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value if isinstance(value, list) else []
    return next((found for item in items if (found := _unpaired_surrogate(item))), None)


# Only a \u escape (D800-DFFF) can put a surrogate into a string decoded from UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json_object(raw_body: bytes | str | None) -> dict[str, Any]:
    """The body as a JSON object; BadRequest (or PayloadTooLarge) saying what is wrong otherwise."""
    if not raw_body:
        raise BadRequest("the request body must be a JSON object")
    raw = raw_body.encode("utf-8", "surrogatepass") if isinstance(raw_body, str) else raw_body
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        # Strictly UTF-8 (RFC 8259): json.loads would also guess UTF-16 and UTF-32 from bytes.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: it is not UTF-8 (invalid byte at {exc.start})") from None
    if _too_deep(text):
        raise BadRequest(
            f"the request body is nested deeper than {MAX_JSON_DEPTH} levels; an order is one flat JSON object"
        )
    try:
        # Decimal keeps 10.1 as 10.1 (a float would not); NaN and Infinity are not JSON.
        # A number's text is measured before it is converted (see MAX_NUMBER_CHARACTERS).
        body = json.loads(
            text,
            parse_float=_bounded_decimal,
            parse_int=_bounded_integer,
            parse_constant=_reject_constant,
            object_pairs_hook=_object_without_duplicate_keys,
        )
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    surrogate = _unpaired_surrogate(body) if _SURROGATE_ESCAPE.search(text) else None
    if surrogate:
        raise BadRequest(f"the request body is not valid JSON: a string holds the unpaired surrogate {surrogate}")
    return body


@dataclass(frozen=True)
class OrderLimits:
    """Business bounds an operator sets (settings), inside the model's fixed sanity bounds."""

    max_quantity: int = MAX_QUANTITY
    max_limit_price: Decimal = MAX_PRICE


def _limit_errors(request: OrderRequest, limits: OrderLimits) -> list[FieldError]:
    errors = []
    if request.quantity > limits.max_quantity:
        errors.append(FieldError("quantity", f"quantity must be at most {limits.max_quantity} (maximum order size)"))
    if request.limit_price is not None and request.limit_price > limits.max_limit_price:
        errors.append(
            FieldError("limit_price", f"limit_price must be at most {limits.max_limit_price} (price sanity bound)")
        )
    return errors


def parse_order_request(raw_body: bytes | str | None, limits: OrderLimits | None = None) -> OrderTerms:
    """OrderTerms from a POST /orders body; raises BadRequest or InvalidOrder naming every problem."""
    body = parse_json_object(raw_body)
    cross_field = _cross_field_errors(body)
    try:
        request = OrderRequest.model_validate(body)
    except ValidationError as exc:
        errors = [_field_error(e) for e in exc.errors()]
        named = {e.field for e in cross_field}
        raise InvalidOrder(cross_field + [e for e in errors if e.field not in named]) from None
    problems = cross_field + _limit_errors(request, limits or OrderLimits())
    if problems:
        raise InvalidOrder(problems)
    return request.to_terms()


class InvalidQuery(InvalidOrder):
    """Query parameters missing, unknown or invalid (422), each named."""

    subject = "query"


DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,256}$"
ISIN_PATTERN = r"^[A-Z0-9]{12}$"
# status=open / closed name groups of statuses, as Alpaca's orders API does.
_STATUS_GROUPS = {"open": OPEN_STATUSES, "closed": TERMINAL_STATUSES}


class ListOrdersQuery(BaseModel):
    """Query parameters of GET /orders."""

    # Not strict: query parameters are text, so "50" must read as 50.
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal[*[s.value for s in OrderStatus], "open", "closed"] | None = Field(  # type: ignore[valid-type]
        default=None, description="One status, or open (not done yet) or closed (done)"
    )
    instrument: str | None = Field(default=None, pattern=ISIN_PATTERN, description="ISIN")
    side: Literal["buy", "sell"] | None = None
    after: AwareDatetime | None = Field(
        default=None, description="Only orders created after this time (exclusive), ISO 8601 with a UTC offset"
    )
    until: AwareDatetime | None = Field(
        default=None, description="Only orders created before this time (exclusive), ISO 8601 with a UTC offset"
    )
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Orders per page")
    next: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="The `next` of the previous page, to get the page after it"
    )


def encode_cursor(cursor: OrderCursor) -> str:
    """Opaque to clients: where a page ended, as URL-safe base64 without padding."""
    text = json.dumps([cursor.created_at.isoformat(), cursor.order_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> OrderCursor:
    """The cursor encode_cursor made; ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created_text, order_id = json.loads(raw)
        created_at = datetime.fromisoformat(created_text)
        if created_at.tzinfo is None:
            raise ValueError("no UTC offset")
        created_at = created_at.astimezone(UTC)
    except (binascii.Error, UnicodeDecodeError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError("not a cursor") from exc
    if not isinstance(order_id, str) or not is_order_id(order_id):
        raise ValueError("not a cursor")
    return OrderCursor(created_at=created_at, order_id=order_id)


# Orders are created in this range; a bound far outside it means the same as
# no bound, and the limits keep the arithmetic on it (UTC conversion, one
# microsecond either side) away from datetime's own ends.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _in_utc(moment: datetime | None, name: str, problems: list[FieldError]) -> datetime | None:
    if moment is None:
        return None
    try:
        converted = moment.astimezone(UTC)
    except OverflowError:  # an offset near year 1 or 9999
        converted = None
    if converted is None or not _EARLIEST <= converted <= _LATEST:
        problems.append(FieldError(name, f"{name} must be between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z"))
        return None
    return converted


def single_values(params: Mapping[str, Sequence[str]] | None) -> dict[str, str]:
    """Each query parameter's one value; InvalidQuery naming every parameter given more than once."""
    params = params or {}
    repeated = [
        FieldError(_shown_name(name), f"{_shown_name(name)} must be given at most once")
        for name, values in params.items()
        if len(values) > 1
    ]
    if repeated:
        raise InvalidQuery(repeated)
    return {name: values[0] for name, values in params.items()}


def parse_list_query(account_id: str, params: Mapping[str, Sequence[str]] | None) -> OrderQuery:
    """The OrderQuery for GET /orders' parameters (name -> its values); raises InvalidQuery naming each problem."""
    values = single_values(params)
    try:
        query = ListOrdersQuery.model_validate(values)
    except ValidationError as exc:
        raise InvalidQuery([_field_error(e) for e in exc.errors()]) from None
    problems: list[FieldError] = []
    after, until = _in_utc(query.after, "after", problems), _in_utc(query.until, "until", problems)
    if after is not None and until is not None and after >= until:
        problems.append(FieldError("until", "until must be later than after"))
    cursor = None
    if query.next is not None:
        try:
            cursor = decode_cursor(query.next)
        except ValueError:
            problems.append(FieldError("next", "next must be the next value of a previous page, unchanged"))
    if cursor is not None and not (
        (after is None or after < cursor.created_at) and (until is None or cursor.created_at < until)
    ):
        # A page of other filters: DynamoDB refuses a start outside the range.
        problems.append(FieldError("next", "next belongs to a listing with other after/until filters"))
    if problems:
        raise InvalidQuery(problems)
    statuses = None
    if query.status is not None:
        statuses = _STATUS_GROUPS.get(query.status) or frozenset({OrderStatus(query.status)})
    return OrderQuery(
        account_id=account_id,
        limit=query.limit,
        statuses=statuses,
        instrument=query.instrument,
        side=Side(query.side) if query.side else None,
        created_after=after,
        created_before=until,
        cursor=cursor,
    )
