"""One error shape: the errors Chalice answers by itself, rewritten as every other error of ours, {"message": ...}.

Chalice answers some requests before (or instead of) our route, with a body
of its own, {"Code": ..., "Message": ...}: 415 UnsupportedMediaType for a
Content-Type the route does not take (application/json; no header at all
counts as JSON), 405 MethodNotAllowedError (locally: on AWS, API Gateway
itself answers a method no route has, already as {"message": ...}), 400 for
a binary answer the Accept header does not allow, and 500 for an exception
our code let through. This HTTP middleware, the outermost, rewrites those
bodies (keeping status and headers) and answers an exception raised by an
inner middleware (which Chalice's own handler would answer in its shape).

A POST whose Content-Type is not JSON is refused (415), not read as JSON
anyway: a form or text body is not what the client meant to send, and the
message says which header to send. API Gateway's own answers (unknown
routes, the authorizer's gateway responses, throttling, timeouts) have the
same shape already: {"message": ...}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalice.app import Request, Response

from chalicelib.observability import logger

INTERNAL_ERROR = "Internal server error"
# A client's header echoed in a message: printable ASCII only, and short.
_MAX_ECHOED = 100


def with_our_error_shape(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """The route's answer, with a Chalice error body in our shape; a 500 of ours for an exception."""
    try:
        response = get_response(request)
    except Exception:
        logger.exception("unhandled error in a middleware", path=getattr(request, "path", None))
        return Response(body={"message": INTERNAL_ERROR}, status_code=500, headers={"Content-Type": "application/json"})
    body = response.body
    if isinstance(body, dict) and set(body) == {"Code", "Message"}:
        response.body = {"message": _message(request, response, body)}
    return response


def _message(request: Request, response: Response, body: dict[str, Any]) -> str:
    code = body["Code"]
    if code == "UnsupportedMediaType":
        given = _echoed(request.headers.get("content-type", ""))
        return (
            f"Content-Type must be application/json, not {given}: send the body as JSON with the header"
            " 'Content-Type: application/json' (curl -d sends application/x-www-form-urlencoded unless told)"
        )
    if code == "MethodNotAllowedError":
        allowed = response.headers.get("Allow", "")
        return f"Method {_echoed(request.method)} is not allowed on this path; allowed: {allowed}"
    if code == "InternalServerError":
        return INTERNAL_ERROR
    return str(body["Message"])


def _echoed(value: str) -> str:
    if value.isascii() and value.isprintable() and len(value) <= _MAX_ECHOED:
        return repr(value)
    return "a value too long or unprintable to show"
