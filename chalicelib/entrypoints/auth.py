"""The API key authorizer: finds the key in a request's headers, answers Allow for its account or Deny with why."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chalice.app import AuthRequest, AuthResponse, Chalice, ChaliceAuthorizer

from chalicelib.adapters.api_keys import ApiKeyRepository
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.accounts import ApiKeyInvalid, ApiKeyMissing, key_id_of
from chalicelib.observability import logger
from chalicelib.service import accounts

MISSING_KEY_MESSAGE = "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
INVALID_KEY_MESSAGE = "Invalid or revoked API key"
# What the caller sees when the keys cannot be read (API Gateway's
# AUTHORIZER_FAILURE response, emulated locally): see infra/gateway_responses.json.
UNAVAILABLE_MESSAGE = "Authentication is temporarily unavailable, retry later"

API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
BEARER_SCHEME = "bearer"

AuthResult = AuthResponse | dict[str, Any]


class AuthenticationUnavailable(RuntimeError):
    """The key store could not be read: neither Allow nor Deny can be answered."""


def api_key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The API key a request carries, or None if it carries none.

    `Authorization: Bearer <key>` (the scheme in any case) or `x-api-key:
    <key>`, header names in any case. An Authorization header that is not
    "Bearer <key>", or the two headers naming different keys, raise
    ApiKeyInvalid: the caller did try to authenticate, and got it wrong.
    """
    by_name: dict[str, str] = {}
    for name, value in headers.items():
        by_name.setdefault(name.lower(), value or "")
    found: list[str] = []
    authorization = by_name.get(AUTHORIZATION_HEADER, "").strip()
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != BEARER_SCHEME or not credentials.strip():
            raise ApiKeyInvalid("the Authorization header is not 'Bearer <key>'")
        found.append(credentials.strip())
    api_key = by_name.get(API_KEY_HEADER, "").strip()
    if api_key:
        found.append(api_key)
    if len(set(found)) > 1:
        raise ApiKeyInvalid("Authorization and x-api-key name different keys")
    return found[0] if found else None


class HeadersAuthRequest(AuthRequest):
    """Chalice's AuthRequest with the request's headers, which is all the authorizer reads."""

    def __init__(self, auth_type: str, token: str, method_arn: str, headers: Mapping[str, str]) -> None:
        super().__init__(auth_type, token, method_arn)
        self.headers = dict(headers)


class RequestOrTokenAuthorizer(ChaliceAuthorizer):
    """A Chalice built-in authorizer that also takes API Gateway's REQUEST events.

    Chalice declares its built-in authorizer as a TOKEN authorizer on one
    header, and its ChaliceAuthorizer reads only `authorizationToken`. We want
    two headers (Authorization and x-api-key) and no caching, so the deployed
    API turns it into a REQUEST authorizer (infra/build_template.py), whose
    events carry every header instead; devstack/api_server.py sends the same
    REQUEST events locally. A TOKEN event (plain `chalice local`,
    chalice.test.Client) still works: its token is the Authorization header.
    Everything else (packaging as a Lambda function, the API's
    securityDefinitions, the routes' `authorizer=`) is Chalice's own, from
    what `@app.authorizer` registered.
    """

    def _transform_event(self, event: dict[str, Any]) -> AuthRequest:
        if event.get("type") == "REQUEST":
            headers: Mapping[str, str] = event.get("headers") or {}
        else:
            headers = {AUTHORIZATION_HEADER: event.get("authorizationToken") or ""}
        token = next((value or "" for name, value in headers.items() if name.lower() == AUTHORIZATION_HEADER), "")
        return HeadersAuthRequest(str(event.get("type", "")), token, str(event["methodArn"]), headers)


def accepting_request_events(app: Chalice) -> Callable[[ChaliceAuthorizer], RequestOrTokenAuthorizer]:
    """Decorator over `@app.authorizer(...)`: the registered authorizer, able to take REQUEST events too."""

    def replace(registered: ChaliceAuthorizer) -> RequestOrTokenAuthorizer:
        authorizer = RequestOrTokenAuthorizer(registered.name, registered.func, registered.scopes)
        # The same config object Chalice registered: packaging and routes see one authorizer.
        authorizer.config = registered.config
        app.handler_map[registered.name] = authorizer
        return authorizer

    return replace


def _deny(request: AuthRequest, message: str, reason: str) -> dict[str, Any]:
    # A Deny policy with the message in its context: API Gateway's
    # ACCESS_DENIED gateway response turns it into a 401 with that message
    # (infra/gateway_responses.json). Raising "Unauthorized" instead would
    # count as a function error and set off the authorizer's error alarm
    # for every caller that forgot its key.
    policy = AuthResponse(routes=["*"], principal_id="anonymous", context={"message": message, "reason": reason})
    denied = policy.to_dict(request)
    for statement in denied["policyDocument"]["Statement"]:
        statement["Effect"] = "Deny"
    return denied


def authorize(request: AuthRequest, keys: ApiKeyRepository) -> AuthResult:
    """Allow every route for the key's account (context `account_id`), or Deny with the reason.

    The routes read the account from `request.context["authorizer"]["account_id"]`.
    """
    headers = request.headers if isinstance(request, HeadersAuthRequest) else {AUTHORIZATION_HEADER: request.token}
    key: str | None = None
    try:
        key = api_key_from_headers(headers)
        account_id = accounts.authenticate(key, keys)
    except ApiKeyMissing:
        logger.info("request without an API key refused")
        return _deny(request, MISSING_KEY_MESSAGE, "missing")
    except ApiKeyInvalid as exc:
        # The key id is not secret (it names the key, e.g. for `ops keys
        # revoke`); the key itself is never logged.
        logger.info("API key refused", extra={"reason": str(exc), "key_id": _key_id_or_none(key)})
        return _deny(request, INVALID_KEY_MESSAGE, "invalid")
    except StorageUnavailable as exc:
        # Not a Deny: the key may well be valid. API Gateway answers its
        # AUTHORIZER_FAILURE response (503, see infra/gateway_responses.json)
        # and the authorizer's error alarm counts it.
        logger.exception("API keys could not be read")
        raise AuthenticationUnavailable(UNAVAILABLE_MESSAGE) from exc
    return AuthResponse(routes=["*"], principal_id=account_id, context={"account_id": account_id})


def _key_id_or_none(key: str | None) -> str | None:
    if key is None:
        return None
    try:
        return key_id_of(key)
    except ApiKeyInvalid:
        return None
