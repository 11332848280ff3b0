"""Reading a request body that may be hostile: bounded in size, depth and number length, strictly UTF-8 JSON with
no duplicate keys and no unpaired surrogates, so that no body costs us more than a small one (400 or 413 if not)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

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


class BadRequest(Exception):
    """The body is not a JSON object we can read at all (400)."""

    status = 400


class PayloadTooLarge(BadRequest):
    """The body is longer than MAX_BODY_BYTES (413)."""

    status = 413


@dataclass(frozen=True)
class OverlongNumber:
    """A JSON number longer than MAX_NUMBER_CHARACTERS, left unconverted; any field it lands in refuses it."""

    length: int


def shown_name(name: str) -> str:
    """A client-chosen name as we may echo it: short, printable, nothing that reorders the text around it."""
    if len(name) <= MAX_ECHOED_NAME and name.isascii() and name.isprintable():
        return name
    shown = json.dumps(name[:MAX_ECHOED_NAME])[1:-1]  # escapes controls, non-ASCII and unpaired surrogates
    return shown + ("..." if len(name) > MAX_ECHOED_NAME else "")


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
            raise BadRequest(f'the request body\'s JSON object has the key "{shown_name(key)}" more than once')
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
