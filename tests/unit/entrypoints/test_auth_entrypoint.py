"""The authorizer entrypoint: reading the key from headers, TOKEN and REQUEST events, Allow / Deny / failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chalice.app import Chalice, ChaliceAuthorizer

from chalicelib.domain.accounts import ApiKeyInvalid
from chalicelib.entrypoints import auth
from chalicelib.service.accounts import create_api_key, revoke_api_key
from tests.unit.fakes import FakeApiKeyRepository

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[3]
ARN = "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/api/GET/orders/abc"
KEY = "bk_abcdefghijkl_" + "k" * 43


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


def request_event(headers: dict[str, str] | None) -> dict[str, Any]:
    return {"type": "REQUEST", "methodArn": ARN, "headers": headers, "httpMethod": "GET", "path": "/orders/abc"}


def token_event(token: str) -> dict[str, Any]:
    return {"type": "TOKEN", "methodArn": ARN, "authorizationToken": token}


def effect(answer: dict[str, Any]) -> str:
    (statement,) = answer["policyDocument"]["Statement"]
    assert statement["Action"] == "execute-api:Invoke"
    assert statement["Resource"] == ["arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/api/*/*"]
    return str(statement["Effect"])


def test_a_valid_key_allows_every_route_for_its_account(
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
        # The contract with the routes: request.context["authorizer"]["account_id"].
        assert answer["context"] == {"account_id": "acme"}


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


# --- Agreement with the app and with the gateway responses ---


def test_every_order_route_needs_the_key_and_the_docs_do_not() -> None:
    import app as application

    routes = application.app.routes
    protected = {(path, method) for path, methods in routes.items() for method, e in methods.items() if e.authorizer}
    assert protected == {
        ("/orders", "POST"),
        ("/orders", "GET"),
        ("/orders/{order_id}", "GET"),
        ("/orders/{order_id}", "DELETE"),
        ("/orders/{order_id}/executions", "GET"),
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
