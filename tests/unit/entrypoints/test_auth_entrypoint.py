"""The authorizer entrypoint: reading the key from headers, TOKEN and REQUEST events, Allow / Deny / failure;
the Allow scoped to the request's method ARN, and the app's 403 for a read-only key's writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from chalice.app import Chalice, ChaliceAuthorizer

from chalicelib.domain.accounts import ApiKeyInvalid, KeyScope, key_id_of
from chalicelib.entrypoints import auth
from chalicelib.service.accounts import create_api_key, revoke_api_key
from tests.unit.fakes import FakeApiKeyRepository, Fakes
from tests.unit.in_process import app_client

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[3]
ARN = "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/api/GET/orders/abc"
KEY = "bk_abcdefghijkl_" + "k" * 43
EVERY_ROUTE = "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/api/*/*"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


# --- Reading the key from the headers ---


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Authorization": ""}, None),
        ({"x-api-key": "  "}, None),
        ({"Authorization": f"Bearer {KEY}"}, KEY),
        ({"authorization": f"bearer {KEY}"}, KEY),
        ({"AUTHORIZATION": f"BEARER   {KEY} "}, KEY),
        ({"x-api-key": KEY}, KEY),
        ({"X-Api-Key": KEY}, KEY),
        ({"X-API-KEY": f" {KEY} "}, KEY),
        ({"Authorization": f"Bearer {KEY}", "x-api-key": KEY}, KEY),
        ({"Content-Type": "application/json", "Accept": "*/*"}, None),
        # The header's value is passed on as it is: whether it is a key is the service's business.
        ({"Authorization": "Bearer not-a-key"}, "not-a-key"),
    ],
)
def test_the_key_is_found_in_either_header(headers: dict[str, str], expected: str | None) -> None:
    assert auth.api_key_from_headers(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": KEY},  # no scheme
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
        {"Authorization": f"Token {KEY}", "x-api-key": KEY},
        {"Authorization": f"Bearer {KEY}", "x-api-key": "bk_zzzzzzzzzzzz_" + "k" * 43},
    ],
)
def test_a_wrong_authorization_header_or_two_different_keys_are_invalid_not_missing(headers: dict[str, str]) -> None:
    with pytest.raises(ApiKeyInvalid):
        auth.api_key_from_headers(headers)


# --- The authorizer ---


@pytest.fixture
def keys() -> FakeApiKeyRepository:
    return FakeApiKeyRepository()


@pytest.fixture
def authorizer(keys: FakeApiKeyRepository) -> auth.RequestOrTokenAuthorizer:
    app = Chalice(app_name="auth-test")

    @auth.accepting_request_events(app)
    @app.authorizer(ttl_seconds=0)
    def api_key_authorizer(auth_request: Any) -> auth.AuthResult:
        return auth.authorize(auth_request, keys)

    assert app.handler_map["api_key_authorizer"] is api_key_authorizer
    assert app.builtin_auth_handlers[0] is api_key_authorizer.config
    return api_key_authorizer


def request_event(headers: dict[str, str] | None, arn: str = ARN) -> dict[str, Any]:
    return {"type": "REQUEST", "methodArn": arn, "headers": headers, "httpMethod": "GET", "path": "/orders/abc"}


def token_event(token: str) -> dict[str, Any]:
    return {"type": "TOKEN", "methodArn": ARN, "authorizationToken": token}


def effect(answer: dict[str, Any], arn: str = ARN) -> str:
    (statement,) = answer["policyDocument"]["Statement"]
    assert statement["Action"] == "execute-api:Invoke"
    # An Allow opens exactly the request's method ARN; a Deny closes everything.
    expected = [arn] if statement["Effect"] == "Allow" else [EVERY_ROUTE]
    assert statement["Resource"] == expected
    return str(statement["Effect"])


def test_a_valid_key_allows_this_request_for_its_account(
    authorizer: auth.RequestOrTokenAuthorizer, keys: FakeApiKeyRepository
) -> None:
    key = create_api_key("acme", None, keys).plaintext
    for event in (
        request_event({"Authorization": f"Bearer {key}"}),
        request_event({"x-api-key": key, "Host": "example"}),
        token_event(f"Bearer {key}"),
    ):
        answer = authorizer(event, {})
        assert effect(answer) == "Allow"
        assert answer["principalId"] == "acme"
        # The contract with the routes: request.context["authorizer"]["account_id"], "scope" and "key_id".
        assert answer["context"] == {"account_id": "acme", "scope": "trade", "key_id": key_id_of(key)}


@pytest.mark.parametrize(
    "event",
    [request_event({}), request_event(None), request_event({"Accept": "*/*"}), token_event("")],
    ids=["no headers", "headers null", "other headers", "empty token"],
)
def test_no_key_is_denied_with_the_missing_message(
    authorizer: auth.RequestOrTokenAuthorizer, keys: FakeApiKeyRepository, event: dict[str, Any]
) -> None:
    answer = authorizer(event, {})
    assert effect(answer) == "Deny"
    assert answer["context"] == {"message": auth.MISSING_KEY_MESSAGE, "reason": "missing"}
    assert keys.reads == 0


def test_bad_and_revoked_keys_are_denied_with_the_invalid_message(
    authorizer: auth.RequestOrTokenAuthorizer, keys: FakeApiKeyRepository
) -> None:
    created = create_api_key("acme", None, keys)
    revoke_api_key(created.key_id, keys)
    for headers in (
        {"Authorization": "Bearer nonsense"},
        {"Authorization": f"Basic {created.plaintext}"},
        {"x-api-key": KEY},  # well-formed, unknown
        {"x-api-key": created.plaintext},  # revoked
    ):
        answer = authorizer(request_event(headers), {})
        assert effect(answer) == "Deny"
        assert answer["context"] == {"message": auth.INVALID_KEY_MESSAGE, "reason": "invalid"}


def test_the_key_is_never_logged(
    authorizer: auth.RequestOrTokenAuthorizer, keys: FakeApiKeyRepository, caplog: pytest.LogCaptureFixture
) -> None:
    created = create_api_key("acme", None, keys)
    revoke_api_key(created.key_id, keys)
    with caplog.at_level("DEBUG"):
        authorizer(request_event({"x-api-key": created.plaintext}), {})
    logged = " ".join(repr(vars(record)) for record in caplog.records)
    assert created.key_id in logged  # the key id names the key for the operator
    secret = created.plaintext.split("_", 2)[2]
    assert secret not in logged


def test_storage_down_is_an_error_not_a_deny(
    authorizer: auth.RequestOrTokenAuthorizer, keys: FakeApiKeyRepository
) -> None:
    key = create_api_key("acme", None, keys).plaintext
    keys.down = True
    with pytest.raises(auth.AuthenticationUnavailable):
        authorizer(request_event({"x-api-key": key}), {})


def test_the_allow_names_only_the_method_arn_it_was_asked_for(
    authorizer: auth.RequestOrTokenAuthorizer, keys: FakeApiKeyRepository
) -> None:
    key = create_api_key("acme", None, keys).plaintext
    prefix = "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/api"
    for arn in (f"{prefix}/POST/orders", f"{prefix}/DELETE/orders/abc", f"{prefix}/GET/orders/abc/executions"):
        answer = authorizer(request_event({"x-api-key": key}, arn), {})
        assert effect(answer, arn) == "Allow"
        assert answer["policyDocument"]["Version"] == "2012-10-17"
        assert "*" not in json.dumps(answer["policyDocument"]["Statement"])


def test_a_read_key_is_allowed_with_its_scope_in_the_context(
    authorizer: auth.RequestOrTokenAuthorizer, keys: FakeApiKeyRepository
) -> None:
    key = create_api_key("acme", None, keys, scope=KeyScope.READ).plaintext
    answer = authorizer(request_event({"x-api-key": key}), {})
    assert effect(answer) == "Allow"
    assert answer["context"] == {"account_id": "acme", "scope": "read", "key_id": key_id_of(key)}


def test_an_expired_key_is_denied_exactly_like_a_revoked_one(keys: FakeApiKeyRepository) -> None:
    created = create_api_key("acme", None, keys, clock=lambda: T0, expires_in=timedelta(hours=1))
    request = auth.HeadersAuthRequest("REQUEST", "", ARN, {"x-api-key": created.plaintext})
    before = auth.authorize(request, keys, clock=lambda: T0 + timedelta(minutes=59))
    assert effect(before) == "Allow"
    after = auth.authorize(request, keys, clock=lambda: T0 + timedelta(hours=1))
    assert effect(after) == "Deny"
    assert after["context"] == {"message": auth.INVALID_KEY_MESSAGE, "reason": "invalid"}


def test_the_authorizer_records_the_last_use_once_a_minute(keys: FakeApiKeyRepository) -> None:
    created = create_api_key("acme", None, keys, clock=lambda: T0)
    request = auth.HeadersAuthRequest("REQUEST", "", ARN, {"x-api-key": created.plaintext})
    for seconds in (0, 1, 30, 59):
        now = T0 + timedelta(seconds=seconds)
        auth.authorize(request, keys, clock=lambda: now)  # noqa: B023 - called within the iteration
    assert keys.keys[created.key_id].last_used_at == T0
    assert keys.use_writes == 1
    auth.authorize(request, keys, clock=lambda: T0 + timedelta(seconds=61))
    assert keys.keys[created.key_id].last_used_at == T0 + timedelta(seconds=61)


def test_failing_to_record_the_use_still_allows(
    authorizer: auth.RequestOrTokenAuthorizer, keys: FakeApiKeyRepository
) -> None:
    key = create_api_key("acme", None, keys).plaintext
    keys.record_use_down = True
    assert effect(authorizer(request_event({"x-api-key": key}), {})) == "Allow"


# --- The app's answer to a read-only key ---


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/orders"), ("DELETE", "/orders/{order_id}"), ("PATCH", "/orders/{order_id}")]
)
def test_a_read_key_may_not_write_and_is_told_why(method: str, path: str) -> None:
    fakes = Fakes()
    read_key = create_api_key("acme", None, fakes.api_keys, scope=KeyScope.READ).plaintext
    order_id = "0b0f5ce2-2a3c-4b8e-9a3e-1f2d3c4b5a69"
    with app_client(fakes) as client:
        response = client.http.request(
            method,
            path.format(order_id=order_id),
            headers={"Authorization": f"Bearer {read_key}", "Content-Type": "application/json"},
            body=json.dumps({"type": "market", "side": "buy", "instrument": "US0378331005", "quantity": 1}).encode(),
        )
    assert response.status_code == 403, response.body
    assert json.loads(response.body) == {"message": auth.READ_ONLY_KEY_MESSAGE.format(method=method)}
    assert "read-only" in auth.READ_ONLY_KEY_MESSAGE
    # Refused before the route: nothing stored, nothing queued, not even a read of the order.
    assert fakes.orders.orders == {} and fakes.orders.writes == 0
    assert fakes.queue.sent == [] and fakes.queue.cancels == []


def test_a_read_key_reads_and_a_trade_key_writes() -> None:
    fakes = Fakes()
    read_key = create_api_key("acme", None, fakes.api_keys, scope=KeyScope.READ).plaintext
    trade_key = create_api_key("acme", None, fakes.api_keys).plaintext
    order = json.dumps({"type": "market", "side": "buy", "instrument": "US0378331005", "quantity": 1}).encode()
    with app_client(fakes) as client:
        placed = client.http.post(
            "/orders", headers={"Authorization": f"Bearer {trade_key}", "Content-Type": "application/json"}, body=order
        )
        assert placed.status_code == 201, placed.body
        order_id = json.loads(placed.body)["id"]
        read = {"Authorization": f"Bearer {read_key}"}
        assert client.http.get("/orders", headers=read).status_code == 200
        got = client.http.get(f"/orders/{order_id}", headers=read)
        assert got.status_code == 200 and json.loads(got.body)["id"] == order_id
        assert client.http.get(f"/orders/{order_id}/executions", headers=read).status_code == 200
        canceled = client.http.delete(f"/orders/{order_id}", headers=read)
        assert canceled.status_code == 403


def test_the_middleware_lets_a_key_without_scope_write_and_refuses_every_other_write_of_a_read_key() -> None:
    # During a deployment the API may already run this code behind the previous authorizer.
    from chalice.app import Request, Response

    def event(context: dict[str, Any], method: str = "POST") -> Request:
        raw = {
            "requestContext": {"httpMethod": method, "resourcePath": "/orders", "authorizer": context},
            "headers": {},
            "multiValueQueryStringParameters": None,
            "pathParameters": None,
            "stageVariables": None,
            "body": None,
            "isBase64Encoded": False,
        }
        return Request(raw)

    passed = Response(body="", status_code=299)
    read = {"account_id": "acme", "scope": "read"}
    assert auth.refuse_writes_with_read_only_keys(event({"account_id": "acme"}), lambda _: passed) is passed
    refused = auth.refuse_writes_with_read_only_keys(event({"account_id": "acme", "scope": "admin"}), lambda _: passed)
    assert refused.status_code == 403
    assert auth.refuse_writes_with_read_only_keys(event({}), lambda _: passed) is passed  # no key: the route's 401
    # Any method but GET, HEAD and OPTIONS changes something: PATCH (no route has it yet) and PUT too.
    for method in ("PATCH", "PUT", "DELETE"):
        assert auth.refuse_writes_with_read_only_keys(event(read, method), lambda _: passed).status_code == 403
    for method in ("GET", "HEAD", "OPTIONS"):
        assert auth.refuse_writes_with_read_only_keys(event(read, method), lambda _: passed) is passed


# --- Agreement with the app and with the gateway responses ---


def test_every_order_route_needs_the_key_and_the_docs_do_not() -> None:
    import app as application

    routes = application.app.routes
    protected = {(path, method) for path, methods in routes.items() for method, e in methods.items() if e.authorizer}
    assert protected == {
        ("/orders", "POST"),
        ("/orders", "GET"),
        ("/orders", "DELETE"),
        ("/orders/by-client-order-id/{client_order_id}", "GET"),
        ("/orders/{order_id}", "GET"),
        ("/orders/{order_id}", "DELETE"),
        ("/orders/{order_id}", "PATCH"),
        ("/orders/{order_id}/executions", "GET"),
        ("/events", "GET"),
        ("/stream/tokens", "POST"),
    }
    for methods in routes.values():
        for entry in methods.values():
            if entry.authorizer is not None:
                assert entry.authorizer is application.api_key_authorizer
    assert isinstance(application.api_key_authorizer, auth.RequestOrTokenAuthorizer)
    assert isinstance(application.api_key_authorizer, ChaliceAuthorizer)
    # No caching even if someone deployed with plain Chalice (TOKEN authorizer).
    assert application.api_key_authorizer.config.ttl_seconds == 0


def test_the_gateway_responses_say_what_the_authorizer_means() -> None:
    responses = json.loads((REPO_ROOT / "infra" / "gateway_responses.json").read_text())

    def body(response_type: str) -> dict[str, Any]:
        return dict(json.loads(responses[response_type]["responseTemplates"]["application/json"]))

    # ACCESS_DENIED carries whichever message the Deny's context holds.
    assert body("ACCESS_DENIED") == {"message": "$context.authorizer.message"}
    assert responses["ACCESS_DENIED"]["statusCode"] == responses["UNAUTHORIZED"]["statusCode"] == 401
    # UNAUTHORIZED: API Gateway's own answer when it has no credentials to pass on.
    assert body("UNAUTHORIZED") == {"message": auth.MISSING_KEY_MESSAGE}
    assert responses["AUTHORIZER_FAILURE"]["statusCode"] == 503
    assert body("AUTHORIZER_FAILURE") == {"message": auth.UNAVAILABLE_MESSAGE}
    for message in (auth.MISSING_KEY_MESSAGE, auth.INVALID_KEY_MESSAGE):
        assert '"' not in message and "\\" not in message  # substituted into the JSON template as it is
