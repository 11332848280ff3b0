"""HTTP requests in: the POST /orders body and GET /orders query models, the page cursor clients pass back, and the
422 errors that name each offending field. Reading a hostile body safely is json_body.py's."""

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
from typing import Annotated, Any, Literal, TypeVar

import stdnum.exceptions
import stdnum.isin
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
from chalicelib.domain.model import OPEN_STATUSES, TERMINAL_STATUSES, OrderStatus, is_order_id
from chalicelib.domain.order_terms import (
    MAX_EXPIRY_AHEAD,
    OrderTerms,
    OrderType,
    Side,
    TimeInForce,
    price_problems,
    time_in_force_problems,
)
from chalicelib.entrypoints.json_body import MAX_NUMBER_CHARACTERS, OverlongNumber, parse_json_object, shown_name

# Sanity bounds: far beyond any real order, but they keep a number from
# overflowing DynamoDB's 38 digits or turning into infinity on its way out.
MAX_QUANTITY = 1_000_000_000
MAX_PRICE = Decimal("1000000000")
# Prices are whole cents: anything finer is refused (422), and every price is
# stored at exactly this exponent, so 100.1, 100.10 and 1.001e2 are one price
# in storage, at the exchange and for an idempotent replay alike.
PRICE_DECIMAL_PLACES = 2
PRICE_TICK = Decimal(1).scaleb(-PRICE_DECIMAL_PLACES)
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


def overlong_number_problem(value: Any) -> Any:
    if isinstance(value, OverlongNumber):
        raise PydanticCustomError(
            "number_too_long",
            "it is {length} characters long, more than {limit}",
            {"length": value.length, "limit": MAX_NUMBER_CHARACTERS},
        )
    return value


def _price_from_json_number(value: Any) -> Any:
    # JSON integers arrive as int; decimals as Decimal (parse_json_object's parse_float).
    # A bool is an int to Python, but never a price.
    value = overlong_number_problem(value)
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

# ISO 6166: two letters (the country, or XS and the like), nine letters or
# digits, and a check digit. What the OpenAPI document can say; the check
# digit and the country code are checked by _valid_isin.
ISIN_PATTERN = r"^[A-Z]{2}[A-Z0-9]{9}[0-9]$"


def _valid_isin(value: str) -> str:
    # python-stdnum's ISIN module: the Luhn check over letters as numbers (A=10 .. Z=35) and the country codes.
    try:
        stdnum.isin.validate(value)
    except stdnum.exceptions.InvalidChecksum:
        raise PydanticCustomError(
            "isin_check_digit",
            "{value} is not a valid ISIN: its check digit (the last character) is wrong",
            {"value": value},
        ) from None
    except stdnum.exceptions.ValidationError:  # after ISIN_PATTERN only the country code can be wrong
        raise PydanticCustomError(
            "isin_country",
            "{value} is not a valid ISIN: {country} is no ISIN country code",
            {"value": value, "country": value[:2]},
        ) from None
    return value


Isin = Annotated[str, Field(pattern=ISIN_PATTERN), AfterValidator(_valid_isin)]


# RFC 3339's date-time (section 5.6, with T and Z in upper case, as OpenAPI's format date-time), which
# pydantic's own parsing is laxer than: it also takes a Unix time as text, a space for the T, lower case
# and no seconds. [0-9], not \d: in Python \d also matches other scripts' digits.
RFC3339_DATE_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339_DATE_TIME = re.compile(RFC3339_DATE_TIME_PATTERN.removeprefix("^").removesuffix("$"))
# The same without its offset, or a bare date: what to tell apart, to say what is missing.
_WITHOUT_OFFSET = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?)?")


def _date_time_text(value: Any) -> Any:
    # The model is strict (no numbers as times), but the time itself comes as RFC 3339 text.
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_text", "it must be a string")
    # fullmatch: "$" would also match before a trailing newline.
    if _WITHOUT_OFFSET.fullmatch(value):
        raise PydanticCustomError("datetime_offset", "it has no UTC offset")
    if not _RFC3339_DATE_TIME.fullmatch(value):
        raise PydanticCustomError("datetime_shape", "it is not an RFC 3339 date-time")
    return value


def _expiry_in_utc(moment: datetime) -> datetime:
    # Kept to the microsecond here: the create checks "in the future" on the time as sent, and
    # only then keeps it to the second (OrderTerms.to_the_second).
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # an offset that carries a time near year 1 or 9999 out of range
        raise PydanticCustomError("datetime_range", "it is out of range") from None


ExpiryTime = Annotated[
    AwareDatetime,
    BeforeValidator(_date_time_text),
    Field(strict=False),
    AfterValidator(_expiry_in_utc),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_DATE_TIME_PATTERN}),
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
                },
                {
                    "type": "stop_limit",
                    "side": "sell",
                    "instrument": "DE0007164600",
                    "quantity": 5,
                    "stop_price": 118.50,
                    "limit_price": 118.00,
                    "time_in_force": "gtc",
                },
            ]
        },
    )

    type: Literal["market", "limit", "stop", "stop_limit"] = Field(
        description="stop and stop_limit rest until the market reaches stop_price, then work as a market order"
        " (stop) or as a limit order at limit_price (stop_limit)"
    )
    side: Literal["buy", "sell"]
    instrument: Isin = Field(
        description="ISIN (ISO 6166): 2 letters (the country), 9 letters or digits, and a check digit that must match"
    )
    quantity: Annotated[int, BeforeValidator(overlong_number_problem)] = Field(
        gt=0, le=MAX_QUANTITY, description="Number of shares"
    )
    limit_price: Price | None = Field(
        default=None,
        description=f"A JSON number greater than 0, at most {int(MAX_PRICE)}, with at most {PRICE_DECIMAL_PLACES}"
        f" decimal places, written in at most {MAX_NUMBER_CHARACTERS} characters; stored (and answered) to the"
        f" tick of {PRICE_TICK}. Required for types limit and stop_limit; absent or null for market and stop.",
    )
    stop_price: Price | None = Field(
        default=None,
        description="The price that triggers a stop order; a number like limit_price. Required for types stop"
        " and stop_limit; absent or null for market and limit.",
    )
    time_in_force: Literal["day", "gtc", "ioc", "fok", "gtd"] = Field(
        default="day",
        description="day (the default): until the exchange's session close; gtc: until canceled; ioc: what fills"
        " at once, the rest canceled; fok: all at once or nothing; gtd: until expires_at. Stop types take"
        " neither ioc nor fok.",
    )
    expires_at: ExpiryTime | None = Field(
        default=None,
        description="When a gtd order expires: an RFC 3339 date-time (ISO 8601 with seconds and a UTC offset),"
        f" e.g. 2026-12-02T15:00:00Z, in the future and at most {MAX_EXPIRY_AHEAD.days} days ahead; kept in UTC"
        " to the second (a fraction is dropped). Required for time_in_force gtd; absent or null otherwise.",
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
            time_in_force=TimeInForce(self.time_in_force),
            expires_at=self.expires_at,
            stop_price=self.stop_price,
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
    "datetime_text": "{field} must be a string: an ISO 8601 date-time with a UTC offset, e.g. 2024-05-02T14:03:07Z",
    "datetime_offset": "{field} must include a UTC offset, e.g. 2024-05-02T14:03:07Z",
    "datetime_shape": (
        "{field} must be an ISO 8601 date-time with a UTC offset as RFC 3339 writes it: date, T, time with seconds"
        " (a fraction may follow), then Z or +hh:mm/-hh:mm, e.g. 2024-05-02T14:03:07Z"
    ),
    "datetime_range": "{field} is out of range",
    "isin_check_digit": "{field} {value} is not a valid ISIN: its check digit (the last character) is wrong",
    "isin_country": "{field} {value} is not a valid ISIN: {country} is no ISIN country code",
}
_FIELD_HINTS = {
    "instrument": (
        "instrument must be an ISIN: 12 characters, 2 uppercase letters (the country), 9 uppercase letters or"
        " digits, and a check digit"
    ),
    "client_order_id": (
        "client_order_id must be 1 to 48 visible characters in Unicode NFC: no control, invisible or"
        " bidirectional-control characters and no spaces other than U+0020"
    ),
}


def field_error(error: Any) -> FieldError:
    """One of pydantic's validation errors as ours: the field by its wire name, and what is wrong in our words."""
    field = shown_name(str(error["loc"][0])) if error["loc"] else "body"
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


_Term = TypeVar("_Term", OrderType, TimeInForce)


def _member_or_none(kind: type[_Term], value: Any) -> _Term | None:
    return kind(value) if isinstance(value, str) and value in {member.value for member in kind} else None


def _cross_field_errors(body: dict[str, Any]) -> list[FieldError]:
    """Which fields go together (domain/order_terms.py), read from the raw body so they show beside other errors."""
    order_type = _member_or_none(OrderType, body.get("type"))
    time_in_force = _member_or_none(TimeInForce, body.get("time_in_force", TimeInForce.DAY.value))
    problems = []
    if order_type is not None:
        problems += price_problems(order_type, body.get("limit_price") is not None, body.get("stop_price") is not None)
    if time_in_force is not None:
        problems += time_in_force_problems(order_type, time_in_force, body.get("expires_at") is not None)
    return [FieldError(problem.field, problem.message) for problem in problems]


@dataclass(frozen=True)
class OrderLimits:
    """Business bounds an operator sets (settings), inside the model's fixed sanity bounds."""

    max_quantity: int = MAX_QUANTITY
    max_limit_price: Decimal = MAX_PRICE


def _limit_errors(request: OrderRequest, limits: OrderLimits) -> list[FieldError]:
    errors = []
    if request.quantity > limits.max_quantity:
        errors.append(FieldError("quantity", f"quantity must be at most {limits.max_quantity} (maximum order size)"))
    # The stop price is bounded like the limit price: either may become the price the order works at.
    for name, price in (("limit_price", request.limit_price), ("stop_price", request.stop_price)):
        if price is not None and price > limits.max_limit_price:
            errors.append(FieldError(name, f"{name} must be at most {limits.max_limit_price} (price sanity bound)"))
    return errors


def parse_order_request(raw_body: bytes | str | None, limits: OrderLimits | None = None) -> OrderTerms:
    """OrderTerms from a POST /orders body; raises BadRequest or InvalidOrder naming every problem.

    Every check that needs no clock: whether expires_at is in the future (and at most 90 days
    ahead) is the create's (domain/order_terms.py check_expiry), after its idempotent look-up.
    expires_at comes in UTC, to the microsecond as sent.
    """
    body = parse_json_object(raw_body)
    cross_field = _cross_field_errors(body)
    # One problem per field: a field that should not be there at all is not also told what its value lacks.
    named = {e.field for e in cross_field}
    try:
        request = OrderRequest.model_validate(body)
    except ValidationError as exc:
        errors = [field_error(e) for e in exc.errors()]
        raise InvalidOrder(cross_field + [e for e in errors if e.field not in named]) from None
    limit_errors = _limit_errors(request, limits or OrderLimits())
    problems = cross_field + [e for e in limit_errors if e.field not in named]
    if problems:
        raise InvalidOrder(problems)
    return request.to_terms()


class InvalidQuery(InvalidOrder):
    """Query parameters missing, unknown or invalid (422), each named."""

    subject = "query"


DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,256}$"
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
        FieldError(shown_name(name), f"{shown_name(name)} must be given at most once")
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
        raise InvalidQuery([field_error(e) for e in exc.errors()]) from None
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
