"""Settings: read once, validated, with errors that name the variable."""

from __future__ import annotations

import pytest

from chalicelib.config import ConfigurationError, Settings, get_settings

pytestmark = pytest.mark.unit


def test_defaults_name_the_local_stack_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ORDERS_TABLE_NAME", "ORDERS_QUEUE_NAME", "PLACEMENT_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.orders_table_name == "brokerage-local-orders"
    assert settings.placement_max_attempts == 3


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PLACEMENT_MAX_ATTEMPTS", "zero"), ("PLACEMENT_MAX_ATTEMPTS", "0"), ("EXCHANGE_URL", "not a url")],
)
def test_a_bad_value_is_a_clear_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match=variable):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_keyword_values_are_parsed_and_bounded_like_the_environments() -> None:
    settings = Settings(placement_max_attempts="5", exchange_timeout_s=2, max_limit_price="12.50")
    assert (settings.placement_max_attempts, settings.exchange_timeout_s) == (5, 2.0)
    assert str(settings.max_limit_price) == "12.50"
    with pytest.raises(ValueError, match="PLACEMENT_BATCH_SIZE must be <= 10: 11"):
        Settings(placement_batch_size=11)


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(ValueError, match="EXCHANGE_URL") as raised:
        Settings(exchange_url="ftp://venue.example/", aws_max_attempts=0, placement_batch_size=2.5)
    assert "AWS_MAX_ATTEMPTS must be >= 1" in str(raised.value)
    assert "PLACEMENT_BATCH_SIZE: 2.5 is not a valid integer" in str(raised.value)


@pytest.mark.parametrize("value", ["nan", "NaN", "sNaN"])
def test_not_a_number_is_no_number(value: str) -> None:
    # NaN compares False with every bound, so only an explicit check refuses it.
    with pytest.raises(ValueError, match="EXCHANGE_TIMEOUT_S"):
        Settings(exchange_timeout_s=value)
    with pytest.raises(ValueError, match="MAX_LIMIT_PRICE"):
        Settings(max_limit_price=value)


def test_an_unknown_setting_is_a_mistake() -> None:
    with pytest.raises(TypeError, match="orders_tabel_name"):
        Settings(orders_tabel_name="typo")


@pytest.mark.parametrize(
    "url",
    [
        "https://exchange.example/",
        "https://10.0.0.7:8443",
        "http://127.0.0.1:8001",
        "http://127.200.0.1:8001",
        "http://localhost:8001",
        "http://[::1]:8001",
    ],
)
def test_the_exchange_is_reached_over_tls_or_over_loopback(url: str) -> None:
    assert Settings(exchange_url=url).exchange_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://exchange.example/",
        "http://10.0.0.7:8001",
        "http://127.0.0.1.nip.io/",  # a name that merely starts like a loopback address
        "http://[::2]:8001",
        "ws://127.0.0.1:8002",
        "https://",
    ],
)
def test_plain_text_to_any_other_host_is_refused_naming_the_variable_and_why(url: str) -> None:
    with pytest.raises(ValueError, match=r"EXCHANGE_URL: .* is not a valid https:// URL \(http:// only to a loopback"):
        Settings(exchange_url=url)


def test_the_venue_credential_secret_has_the_local_stacks_name_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXCHANGE_CREDENTIAL_SECRET_NAME", raising=False)
    assert Settings().exchange_credential_secret_name == "brokerage-local-exchange-credential"
    monkeypatch.setenv("EXCHANGE_CREDENTIAL_SECRET_NAME", "brokerage-dev-exchange-credential")
    assert Settings().exchange_credential_secret_name == "brokerage-dev-exchange-credential"
