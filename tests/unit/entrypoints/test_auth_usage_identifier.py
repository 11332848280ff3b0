"""The authorizer's usage identifier (per-account rate limits on AWS): the account's API Gateway key, read through a
short cache; and every authorized route requiring an API key, which API Gateway's usage plans need."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from app import create_app
from chalicelib.adapters.accounts_table import WITHOUT_USAGE_KEY_CACHE_TTL_S, CachedAccountRateLimits
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.config import Settings
from chalicelib.domain.rate_limits import UsageKey
from chalicelib.entrypoints import auth
from chalicelib.service.accounts import create_api_key
from tests.unit.fakes import FakeAccountRateLimits, Fakes

pytestmark = pytest.mark.unit

FALLBACK = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
ARN = "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/api/GET/orders"


def request_event(key: str) -> dict[str, Any]:
    return {"type": "REQUEST", "methodArn": ARN, "headers": {"Authorization": f"Bearer {key}"}}


def authorize(fakes: Fakes, key: str) -> dict[str, Any]:
    """Through the app's own authorizer handler, wired to the fakes as in production."""
    app = create_app(fakes.dependencies, Settings())
    answer: dict[str, Any] = app.handler_map["api_key_authorizer"](request_event(key), {})
    return answer


def test_an_allow_names_the_accounts_api_gateway_key_as_its_usage_identifier() -> None:
    fakes = Fakes()
    fakes.rate_limits.set_usage_key("acme", UsageKey("k1a2b3", "usage-value-of-acme"))
    answer = authorize(fakes, create_api_key("acme", None, fakes.api_keys).plaintext)
    assert answer["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert answer["usageIdentifierKey"] == "usage-value-of-acme"
    # Never in the context: the routes have no use for it.
    assert "usage-value-of-acme" not in str(answer["context"])


def test_an_account_without_a_key_of_its_own_is_allowed_without_a_usage_identifier_locally() -> None:
    # Locally (no API Gateway, no fallback key) every account is so.
    fakes = Fakes()
    answer = authorize(fakes, create_api_key("acme", None, fakes.api_keys).plaintext)
    assert answer["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert "usageIdentifierKey" not in answer


def test_a_deny_reads_no_account_and_names_no_usage_identifier() -> None:
    fakes = Fakes()
    fakes.rate_limits.set_usage_key("acme", UsageKey("k1a2b3", "usage-value-of-acme"))
    answer = authorize(fakes, "bk_abcdefghijkl_" + "k" * 43)
    assert answer["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    assert "usageIdentifierKey" not in answer
    assert fakes.rate_limits.reads == 0


def test_an_unreadable_accounts_table_is_authentication_unavailable_not_an_allow() -> None:
    fakes = Fakes()
    key = create_api_key("acme", None, fakes.api_keys).plaintext
    fakes.rate_limits.down = True
    with pytest.raises(auth.AuthenticationUnavailable):
        authorize(fakes, key)


def test_the_usage_key_is_read_once_a_minute_per_account() -> None:
    store, now = FakeAccountRateLimits(), [0.0]
    cached = CachedAccountRateLimits(store, ttl_s=60.0, clock=lambda: now[0])
    store.set_usage_key("acme", UsageKey("k1", "v1"))
    assert cached.get("acme").usage_key == UsageKey("k1", "v1")
    store.set_usage_key("acme", UsageKey("k2", "v2"))
    now[0] = 59.0
    assert cached.get("acme").usage_key == UsageKey("k1", "v1")
    assert store.reads == 1
    now[0] = 60.0
    assert cached.get("acme").usage_key == UsageKey("k2", "v2")
    assert store.reads == 2


def test_an_account_without_a_usage_key_is_read_again_within_seconds() -> None:
    # Its fix (a key of its own, `ops keys rate-limit --default`) must not wait out the minute.
    store, now = FakeAccountRateLimits(), [0.0]
    cached = CachedAccountRateLimits(store, ttl_s=60.0, clock=lambda: now[0], without_usage_key_ttl_s=5.0)
    assert cached.get("acme").usage_key is None
    store.set_usage_key("acme", UsageKey("k1", "v1"))
    now[0] = 4.9
    assert cached.get("acme").usage_key is None
    now[0] = 5.0
    assert cached.get("acme").usage_key == UsageKey("k1", "v1")
    assert store.reads == 2
    assert WITHOUT_USAGE_KEY_CACHE_TTL_S <= 5.0


def test_an_unreadable_table_answers_with_the_accounts_last_read_and_only_a_new_account_fails() -> None:
    store, now = FakeAccountRateLimits(), [0.0]
    cached = CachedAccountRateLimits(store, ttl_s=60.0, clock=lambda: now[0])
    store.set_usage_key("acme", UsageKey("k1", "v1"))
    assert cached.get("acme").usage_key == UsageKey("k1", "v1")
    store.down = True
    now[0] = 3600.0
    assert cached.get("acme").usage_key == UsageKey("k1", "v1")
    with pytest.raises(StorageUnavailable):
        cached.get("other")
    # Back up: read again at once (the stale answer was not cached as fresh).
    store.down = False
    store.set_usage_key("acme", UsageKey("k2", "v2"))
    assert cached.get("acme").usage_key == UsageKey("k2", "v2")


def test_through_a_table_blip_the_authorizer_still_allows_with_the_usage_key_it_read_last() -> None:
    fakes = Fakes()
    fakes.rate_limits.set_usage_key("acme", UsageKey("k1a2b3", "usage-value-of-acme"))
    cached = CachedAccountRateLimits(fakes.rate_limits, ttl_s=0.0)
    app = create_app(lambda: dataclasses.replace(fakes.dependencies(), account_rate_limits=cached), Settings())
    key = create_api_key("acme", None, fakes.api_keys).plaintext
    assert app.handler_map["api_key_authorizer"](request_event(key), {})["usageIdentifierKey"] == "usage-value-of-acme"
    fakes.rate_limits.down = True
    answer = app.handler_map["api_key_authorizer"](request_event(key), {})
    assert answer["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert answer["usageIdentifierKey"] == "usage-value-of-acme"


def test_on_aws_an_account_without_a_key_of_its_own_gets_the_stacks_fallback_key_logged_and_counted(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    fakes = Fakes()
    fakes.rate_limits.set_usage_key("bolt", UsageKey("k9", "usage-value-of-bolt"))
    app = create_app(fakes.dependencies, Settings(fallback_usage_key=FALLBACK))
    capsys.readouterr()
    caplog.set_level("INFO")
    answer = app.handler_map["api_key_authorizer"](
        request_event(create_api_key("acme", None, fakes.api_keys).plaintext), {}
    )
    assert answer["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert answer["usageIdentifierKey"] == FALLBACK
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (metric,) = [line for line in lines if auth.FALLBACK_USAGE_KEY_METRIC in line]
    assert metric[auth.FALLBACK_USAGE_KEY_METRIC] == [1.0] and metric["account_id"] == "acme"
    (warning,) = [record for record in caplog.records if record.levelname == "WARNING"]
    assert vars(warning)["account_id"] == "acme" and "fallback" in warning.getMessage()
    assert FALLBACK not in json.dumps(lines) + " ".join(repr(vars(record)) for record in caplog.records)
    # An account with a key of its own: its key, nothing counted.
    answer = app.handler_map["api_key_authorizer"](
        request_event(create_api_key("bolt", None, fakes.api_keys).plaintext), {}
    )
    assert answer["usageIdentifierKey"] == "usage-value-of-bolt"
    assert auth.FALLBACK_USAGE_KEY_METRIC not in capsys.readouterr().out


def test_every_route_with_the_authorizer_requires_an_api_key_and_no_other_does() -> None:
    app = create_app(Fakes().dependencies, Settings())
    routes = [(path, method, entry) for path, methods in app.routes.items() for method, entry in methods.items()]
    authorized = {(path, method) for path, method, entry in routes if entry.authorizer is not None}
    keyed = {(path, method) for path, method, entry in routes if entry.api_key_required}
    assert ("/orders", "POST") in authorized
    assert keyed == authorized
    assert ("/openapi.json", "GET") not in keyed
