"""The knobs of time in force and the price path: defaults, and the checks of the environment and /admin/config."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.exchange_sim.config import InvalidValue, SimConfig, config_from_env

pytestmark = pytest.mark.unit

NEW_KNOBS = ("limit_ttl_s", "limit_outcome", "session_close_utc", "session_length_s", "price_tick_s", "price_step_bps")


def test_defaults() -> None:
    config = SimConfig().to_json()

    assert {key: config[key] for key in NEW_KNOBS} == {
        "limit_ttl_s": None,
        "limit_outcome": "random",
        "session_close_utc": "20:00",
        "session_length_s": None,
        "price_tick_s": 1.0,
        "price_step_bps": 10,
    }


def test_the_environment_sets_them() -> None:
    config, _ = config_from_env(
        {
            "EXCHANGE_LIMIT_TTL_S": "1",
            "EXCHANGE_LIMIT_OUTCOME": "partial",
            "EXCHANGE_SESSION_CLOSE_UTC": "21:30:15",
            "EXCHANGE_SESSION_LENGTH_S": "2.5",
            "EXCHANGE_PRICE_TICK_S": "0.05",
            "EXCHANGE_PRICE_STEP_BPS": "0",
        }
    )

    assert (config.limit_ttl_s, config.limit_outcome, config.session_close_utc) == (1.0, "partial", "21:30:15")
    assert (config.session_length_s, config.price_tick_s, config.price_step_bps) == (2.5, 0.05, 0)


def test_an_empty_variable_is_unset() -> None:
    config, _ = config_from_env({"EXCHANGE_SESSION_CLOSE_UTC": "", "EXCHANGE_SESSION_LENGTH_S": " "})

    assert (config.session_close_utc, config.session_length_s) == ("20:00", None)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EXCHANGE_LIMIT_OUTCOME", "always"),
        ("EXCHANGE_SESSION_CLOSE_UTC", "8pm"),
        ("EXCHANGE_SESSION_CLOSE_UTC", "24:00"),
        ("EXCHANGE_SESSION_LENGTH_S", "0"),
        ("EXCHANGE_SESSION_LENGTH_S", "short"),
        ("EXCHANGE_PRICE_TICK_S", "0"),
        ("EXCHANGE_PRICE_STEP_BPS", "2.5"),
        ("EXCHANGE_PRICE_STEP_BPS", "-1"),
    ],
)
def test_a_bad_variable_is_refused_by_name(variable: str, value: str) -> None:
    with pytest.raises(InvalidValue, match=variable):
        config_from_env({variable: value})


def test_admin_config_sets_and_unsets_them() -> None:
    config = SimConfig().updated({"limit_ttl_s": 1.0, "session_length_s": 3, "limit_outcome": "rest"})
    assert (config.limit_ttl_s, config.session_length_s, config.limit_outcome) == (1.0, 3.0, "rest")

    unset = config.updated({"limit_ttl_s": None, "session_length_s": None})

    assert (unset.limit_ttl_s, unset.session_length_s) == (None, None)
    # What GET /admin/config answers can be POSTed back as it is.
    assert SimConfig().updated(unset.to_json()) == unset


@pytest.mark.parametrize(
    "changes",
    [
        {"limit_outcome": None},
        {"limit_outcome": "fok"},
        {"session_close_utc": "20"},
        {"session_close_utc": 2000},
        {"session_close_utc": "20:00Z"},
        {"session_length_s": 0},
        {"session_length_s": "2"},
        {"price_tick_s": None},
        {"price_tick_s": -1},
        {"price_step_bps": 1.5},
        {"price_step_bps": 10001},
        {"price_step_bps": True},
        {"limit_ttl_s": -1},
        {"price_tick_s": 10**400},  # no float holds it: refused, not a crash
    ],
)
def test_admin_config_refuses_bad_values_by_key(changes: dict[str, Any]) -> None:
    (key,) = changes
    with pytest.raises(InvalidValue, match=key):
        SimConfig().updated(changes)
