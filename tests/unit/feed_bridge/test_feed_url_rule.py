"""The bridge's feed URL: wss:// anywhere, plain-text ws:// only to a loopback host, the error naming the variable."""

from __future__ import annotations

import pytest

from feed_bridge.settings import ConfigurationError, load_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTIONS_STREAM_NAME", "s")
    monkeypatch.setenv("FEED_CHECKPOINTS_TABLE_NAME", "table")


@pytest.mark.parametrize(
    "url",
    [
        "wss://feed.exchange.example/feed",
        "wss://10.0.0.7:8443/feed",
        "ws://127.0.0.1:8002/feed",
        "ws://127.8.9.10/feed",
        "ws://localhost:8002/feed",
        "ws://[::1]:8002/feed",
    ],
)
def test_encrypted_or_loopback_feed_urls_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("EXCHANGE_FEED_URL", url)

    assert str(load_settings().exchange_feed_url).rstrip("/") == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "ws://feed.exchange.example/feed",
        "ws://10.0.0.7:8002/feed",
        "ws://127.0.0.1.nip.io/feed",  # a name that merely starts like a loopback address
        "ws://[::2]/feed",
    ],
)
def test_plain_text_to_any_other_host_is_refused_naming_the_variable_and_why(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("EXCHANGE_FEED_URL", url)

    with pytest.raises(ConfigurationError, match=r"EXCHANGE_FEED_URL: .*plain-text ws://.*loopback.*use wss://"):
        load_settings()


def test_the_credential_secret_has_the_local_stacks_name_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXCHANGE_CREDENTIAL_SECRET_NAME", raising=False)
    assert load_settings().exchange_credential_secret_name == "brokerage-local-exchange-credential"
    monkeypatch.setenv("EXCHANGE_CREDENTIAL_SECRET_NAME", "brokerage-prod-exchange-credential")
    assert load_settings().exchange_credential_secret_name == "brokerage-prod-exchange-credential"
