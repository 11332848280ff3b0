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
