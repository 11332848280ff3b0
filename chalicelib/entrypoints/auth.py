"""The API key authorizer and the scope check.

The authorizer finds the key in a request's headers and answers Allow for
this one request (its method ARN) with the key's account and scope in the
context, and the account's usage identifier (its API Gateway API key, whose
usage plan holds the account's request rate limit: the API's key source is
AUTHORIZER; the stack's shared fallback key for an account without one), or
Deny with why. The scope check is app middleware: a read-only
key's POST, PATCH or DELETE is a 403 from the app itself (see
refuse_writes_with_read_only_keys for why not a Deny).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chalice.app import AuthRequest, AuthResponse, Chalice, ChaliceAuthorizer, Request, Response

from chalicelib.adapters.accounts_table import AccountRateLimitsRepository
from chalicelib.adapters.api_keys import ApiKeyRepository
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.clock import Clock, utc_now
from chalicelib.domain.accounts import DEFAULT_SCOPE, ApiKeyInvalid, ApiKeyMissing, KeyScope, key_id_of
from chalicelib.observability import count_now, logger
from chalicelib.service import accounts

MISSING_KEY_MESSAGE = "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
# Also for an expired key: callers are not told which.
INVALID_KEY_MESSAGE = "Invalid or revoked API key"
READ_ONLY_KEY_MESSAGE = "This API key is read-only (scope read): {method} needs a key with scope trade"
# What a read key may do: read. Anything else (POST, PATCH, DELETE, PUT) changes orders.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Writes a read key may make all the same, as (method, route). A stream token
# changes no order: it only lets its key read the order stream from a browser
# (which cannot send the key on a WebSocket), as the key itself may over GET /events.
READ_KEY_WRITES = frozenset({("POST", "/stream/tokens")})
# What the caller sees when the keys cannot be read (API Gateway's
# AUTHORIZER_FAILURE response, emulated locally): see infra/gateway_responses.json.
UNAVAILABLE_MESSAGE = "Authentication is temporarily unavailable, retry later"
# Counted per request allowed on the stack's shared fallback usage key (an account without its own).
FALLBACK_USAGE_KEY_METRIC = "RequestsOnFallbackUsageKey"

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


def authorize(
    request: AuthRequest,
    keys: ApiKeyRepository,
    clock: Clock = utc_now,
    rate_limits: AccountRateLimitsRepository | None = None,
    fallback_usage_key: str | None = None,
) -> dict[str, Any]:
    """Allow this request for the key's account (context `account_id`, `scope`, `key_id`), or Deny with the reason.

    The routes read the account from `request.context["authorizer"]["account_id"]`
    (POST /stream/tokens also the key id); refuse_writes_with_read_only_keys reads the scope.
    With rate_limits (the accounts table, cached), an Allow also carries the
    account's usage identifier: its own API Gateway key, else fallback_usage_key
    (the stack's shared one, on AWS), else none (locally).
    """
    headers = request.headers if isinstance(request, HeadersAuthRequest) else {AUTHORIZATION_HEADER: request.token}
    key: str | None = None
    usage_identifier: str | None = None
    try:
        key = api_key_from_headers(headers)
        authenticated = accounts.authenticate_key(key, keys, clock)
        if rate_limits is not None:
            usage_identifier = _usage_identifier(authenticated.account_id, rate_limits, fallback_usage_key)
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
        # and the authorizer's error alarm counts it. The accounts table is
        # read through a cache that answers with an account's last read while
        # it is down, so only an account not seen lately gets here for it.
        logger.exception("API keys could not be read (the key, or its account's usage key)")
        raise AuthenticationUnavailable(UNAVAILABLE_MESSAGE) from exc
    return _allow(request, authenticated, usage_identifier)


def _usage_identifier(
    account_id: str, rate_limits: AccountRateLimitsRepository, fallback_usage_key: str | None
) -> str | None:
    """The account's own usage key's value, else the stack's shared fallback (logged and counted), else None."""
    own = accounts.usage_identifier(account_id, rate_limits)
    if own is not None or fallback_usage_key is None:
        return own
    # Every such account shares one bucket at the default limit (the fallback key is in the
    # default plan): operators find them by this line and metric, and give each its own key
    # with `python -m ops keys rate-limit --account <id> --default` (docs/deploy.md).
    logger.warning(
        "account without a usage key of its own: on the shared fallback key", extra={"account_id": account_id}
    )
    count_now(FALLBACK_USAGE_KEY_METRIC, account_id=account_id)
    return fallback_usage_key


def _allow(request: AuthRequest, key: accounts.AuthenticatedKey, usage_identifier: str | None) -> dict[str, Any]:
    # Allow exactly the method ARN this request was authorized for, not every
    # route: were the authorizer ever cached, a cached Allow still could not
    # open another method or path. The scope rides in the context (a string,
    # as API Gateway requires of context values).
    allowed: dict[str, Any] = {
        "principalId": key.account_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": [request.method_arn]}],
        },
        "context": {"account_id": key.account_id, "scope": key.scope.value, "key_id": key.key_id},
    }
    if usage_identifier is not None:
        # API Gateway throttles the request by the usage plan of the API key
        # with this value (the API's key source is AUTHORIZER); an Allow
        # without one would be refused there with 403, hence the fallback key.
        allowed["usageIdentifierKey"] = usage_identifier
    return allowed


def require_usage_plan_keys(app: Chalice) -> None:
    """Every route behind the authorizer requires an API key: API Gateway's usage plans throttle only such methods.

    The key is not one the client sends: the API's key source is AUTHORIZER
    (infra/build_template.py), so API Gateway takes it from the
    authorizer's usageIdentifierKey. Call after every route is registered;
    `chalice package` then marks each of these methods apiKeyRequired.
    chalice local and devstack's gateway ignore the flag (the local server
    throttles by account itself, devstack/rate_limiter.py).
    """
    for methods in app.routes.values():
        for route in methods.values():
            if route.authorizer is not None:
                route.api_key_required = True


def refuse_writes_with_read_only_keys(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """Chalice HTTP middleware: 403 {"message": ...} for a read-only key's request other than GET/HEAD/OPTIONS.

    Not a Deny from the authorizer: API Gateway answers every Deny with its
    one ACCESS_DENIED gateway response, whose status is fixed (our 401 for
    missing and invalid keys), so a Deny cannot be a 403 beside it. The app
    answers the same on AWS and behind the local gateway emulation, both of
    which pass the authorizer's context to it. Deciding here by the request's
    method, not in the authorizer, also keeps the authorizer's answer the
    same for every request with one key (safe to cache should caching ever
    be turned on).
    """
    authorizer = request.context.get("authorizer")
    route = (request.method, str(request.context.get("resourcePath") or ""))
    if request.method in READ_METHODS or route in READ_KEY_WRITES:
        return get_response(request)
    if isinstance(authorizer, dict) and "account_id" in authorizer:
        # No scope at all: an authorizer from before scopes (during a
        # deployment), when every key could trade.
        scope = authorizer.get("scope", DEFAULT_SCOPE.value)
        if scope != KeyScope.TRADE.value:
            logger.info("write with a read-only key refused", extra={"method": request.method, "scope": scope})
            return Response(
                body={"message": READ_ONLY_KEY_MESSAGE.format(method=request.method)},
                status_code=403,
                headers={"Content-Type": "application/json"},
            )
    return get_response(request)


def _key_id_or_none(key: str | None) -> str | None:
    if key is None:
        return None
    try:
        return key_id_of(key)
    except ApiKeyInvalid:
        return None
