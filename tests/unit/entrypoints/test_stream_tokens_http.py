"""POST /stream/tokens in process through chalice.test with in-memory fakes: the token, its key, who may ask."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from chalice.app import Request

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.adapters.streaming import StreamTokenGrant
from chalicelib.domain.accounts import KeyScope, key_id_of
from chalicelib.entrypoints import event_query
from chalicelib.entrypoints.http import NO_ACCOUNT_BODY
from chalicelib.service.accounts import create_api_key
from tests.unit.fakes import Fakes
from tests.unit.in_process import app_client

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


def headers_of(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_token_is_201_with_its_expiry_and_stands_for_the_key_that_asked() -> None:
    fakes = Fakes(clock=lambda: T0)
    key = create_api_key("acme", None, fakes.api_keys, clock=lambda: T0).plaintext
    with app_client(fakes) as client:
        answer = client.http.post("/stream/tokens", headers=headers_of(key))
    assert answer.status_code == 201, answer.body
    assert set(answer.json_body) == {"token", "expires_at"}
    assert answer.json_body["expires_at"] == "2026-12-02T09:35:00.000Z"  # five minutes, as the API writes times
    grant, expires_at = fakes.stream_tokens.tokens[answer.json_body["token"]]
    assert grant == StreamTokenGrant(key_id=key_id_of(key), account_id="acme")
    assert expires_at == T0 + timedelta(minutes=5)


def test_every_request_gets_a_token_of_its_own() -> None:
    fakes = Fakes()
    key = create_api_key("acme", None, fakes.api_keys).plaintext
    with app_client(fakes) as client:
        tokens = {client.http.post("/stream/tokens", headers=headers_of(key)).json_body["token"] for _ in range(3)}
    assert len(tokens) == 3


def test_a_read_only_key_may_get_a_token_though_it_may_not_cancel_an_order() -> None:
    fakes = Fakes()
    key = create_api_key("acme", None, fakes.api_keys, scope=KeyScope.READ).plaintext
    with app_client(fakes) as client:
        answer = client.http.post("/stream/tokens", headers=headers_of(key))
        cancel = client.http.delete("/orders/00000000-0000-4000-8000-000000000000", headers=headers_of(key))
    assert answer.status_code == 201, answer.body
    assert cancel.status_code == 403  # the exemption is this route's alone
    [(grant, _)] = fakes.stream_tokens.tokens.values()
    assert grant == StreamTokenGrant(key_id=key_id_of(key), account_id="acme")


def test_without_a_key_the_gateway_answers_401_and_no_token_is_issued() -> None:
    fakes = Fakes()
    with app_client(fakes) as client:
        answer = client.http.post("/stream/tokens")
    assert answer.status_code == 401
    assert fakes.stream_tokens.tokens == {}


@pytest.mark.parametrize(
    "authorizer",
    [None, {"account_id": "acme"}, {"key_id": "k1"}, {"account_id": "acme", "key_id": ""}],
    ids=["no-authorizer", "no-key-id", "no-account", "empty-key-id"],
)
def test_a_request_the_authorizer_named_no_account_or_key_for_is_401(authorizer: dict[str, str] | None) -> None:
    context: dict[str, object] = {"httpMethod": "POST", "resourcePath": "/stream/tokens"}
    if authorizer is not None:
        context["authorizer"] = authorizer
    event = {
        "headers": {},
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "requestContext": context,
        "body": None,
        "stageVariables": None,
    }
    fakes = Fakes()
    answer = event_query.create_stream_token(Request(event), fakes.dependencies())
    assert answer.status_code == 401
    assert answer.body == NO_ACCOUNT_BODY
    assert fakes.stream_tokens.tokens == {}


def test_an_unwritable_token_store_is_503_not_500() -> None:
    fakes = Fakes()
    key = create_api_key("acme", None, fakes.api_keys).plaintext
    with app_client(fakes) as client:
        fakes.stream_tokens = FailingTokens()  # type: ignore[assignment]
        answer = client.http.post("/stream/tokens", headers=headers_of(key))
    assert answer.status_code == 503
    assert answer.json_body == event_query.TOKENS_UNAVAILABLE_BODY


class FailingTokens:
    def issue(self, grant: StreamTokenGrant, expires_at: datetime) -> str:
        raise StorageUnavailable("down")

    def redeem(self, token: str, now: datetime) -> StreamTokenGrant | None:
        raise StorageUnavailable("down")
