"""A Chalice app for the local API server's tests: the real authorizer, and routes that show what reaches them."""

from __future__ import annotations

import json
from typing import Any

from chalice.app import AuthRequest, AuthResponse, Chalice, Response

from chalicelib import bootstrap
from chalicelib.entrypoints import auth
from chalicelib.entrypoints.json_body import BadRequest, parse_json_object

app = Chalice(app_name="api-server-fixture")


@auth.accepting_request_events(app)
@app.authorizer(ttl_seconds=0)
def api_key_authorizer(auth_request: AuthRequest) -> auth.AuthResult:
    return auth.authorize(auth_request, bootstrap.production().api_keys)


@auth.accepting_request_events(app)
@app.authorizer(ttl_seconds=0)
def echo_authorizer(auth_request: AuthRequest) -> AuthResponse:
    """Allows everything and tells the route what the authorizer was given."""
    headers = getattr(auth_request, "headers", {})
    return AuthResponse(["*"], "echo", {"type": auth_request.auth_type, "headers": json.dumps(headers)})


@auth.accepting_request_events(app)
@app.authorizer(ttl_seconds=0)
def refusing_authorizer(auth_request: AuthRequest) -> AuthResponse:
    raise Exception("Unauthorized")  # the exact error API Gateway reads as UNAUTHORIZED


@auth.accepting_request_events(app)
@app.authorizer(ttl_seconds=0)
def broken_authorizer(auth_request: AuthRequest) -> dict[str, Any]:
    return {"not": "a policy"}


@auth.accepting_request_events(app)
@app.authorizer(ttl_seconds=0)
def narrow_authorizer(auth_request: AuthRequest) -> dict[str, Any]:
    """Allows the method ARN asked for (path .../exact) or, otherwise, the same path's POST only."""
    arn = auth_request.method_arn
    allowed = arn if arn.endswith("/exact") else arn.replace("/GET/", "/POST/")
    return {
        "principalId": "narrow",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": [allowed]}],
        },
        "context": {"asked": arn, "message": "allowed elsewhere only"},
    }


def _seen() -> dict[str, Any]:
    request = app.current_request
    assert request is not None
    return {"method": request.method, "authorizer": request.context.get("authorizer"), "body": request.json_body}


@app.route("/whoami", methods=["GET", "POST"], authorizer=api_key_authorizer, cors=True)
def whoami() -> dict[str, Any]:
    return _seen()


@app.route("/echo/{thing}", methods=["GET"], authorizer=echo_authorizer)
def echo(thing: str) -> dict[str, Any]:
    return {**_seen(), "thing": thing}


@app.route("/bytes", methods=["POST"], content_types=["application/octet-stream"], authorizer=api_key_authorizer)
def count_bytes() -> dict[str, Any]:
    request = app.current_request
    assert request is not None
    return {"length": len(request.raw_body)}


@app.route("/narrow/{what}", methods=["GET"], authorizer=narrow_authorizer)
def narrow(what: str) -> dict[str, Any]:
    return _seen()


@app.route("/open", methods=["GET"])
def open_route() -> dict[str, Any]:
    return _seen()


@app.route("/refused", methods=["GET"], authorizer=refusing_authorizer)
def refused() -> dict[str, Any]:
    return _seen()


@app.route("/broken", methods=["GET"], authorizer=broken_authorizer)
def broken() -> dict[str, Any]:
    return _seen()


@app.route("/parsed", methods=["POST"])
def parsed() -> Response:
    """Our body parsing as the order routes use it: 400, or 413 past the size limit."""
    request = app.current_request
    assert request is not None
    try:
        body = parse_json_object(request.raw_body)
    except BadRequest as exc:
        return Response({"message": str(exc)}, status_code=exc.status)
    return Response({"keys": sorted(body)})
