"""app.py's wiring: Lambda finds every function Chalice packages, and the app runs with the dependencies it is given."""

from __future__ import annotations

import importlib

import pytest
from chalice.test import Client

import app as application
from app import create_app
from chalicelib.config import Settings
from tests.unit.fakes import Fakes
from tests.unit.in_process import bearer

pytestmark = pytest.mark.unit


def test_every_packaged_handler_string_names_the_function_chalice_registered() -> None:
    registered = {
        **{source.name: source.handler_string for source in application.app.event_sources},
        **{auth.name: auth.handler_string for auth in application.app.builtin_auth_handlers},
        **{ws.name: ws.handler_string for ws in application.app.websocket_handlers.values()},
    }
    assert set(registered) == {
        "place_orders",
        "sweep_pending_orders",
        "reconcile_orders",
        "apply_executions",
        "api_key_authorizer",
        "publish_order_events",
        "close_revoked_stream_connections",
        "stream_connect",
        "stream_message",
        "stream_disconnect",
    }
    for name, handler_string in registered.items():
        module_name, attribute = handler_string.split(".")
        # What the Lambda runtime does with the handler string.
        assert getattr(importlib.import_module(module_name), attribute) is application.app.handler_map[name]


def test_an_app_asks_its_dependencies_on_every_invocation() -> None:
    asked: list[Fakes] = []
    fakes = Fakes()

    def dependencies():  # type: ignore[no-untyped-def]
        asked.append(fakes)
        return fakes.dependencies()

    with Client(create_app(dependencies, Settings())) as client:
        assert asked == []  # building the app builds nothing
        client.http.get("/orders", headers=bearer(fakes, "acme"))
    assert len(asked) == 2  # the authorizer's API key, then the route


def test_the_websocket_api_is_packaged_with_a_handler_for_each_of_its_routes() -> None:
    # Without the experimental flag `chalice package` refuses the WebSocket handlers.
    assert "WEBSOCKETS" in application.app.experimental_feature_flags
    handlers = {route: config.name for route, config in application.app.websocket_handlers.items()}
    assert handlers == {"$connect": "stream_connect", "$default": "stream_message", "$disconnect": "stream_disconnect"}


def test_the_order_events_come_from_the_orders_tables_stream_as_the_settings_say() -> None:
    settings = Settings(
        orders_table_stream_arn="arn:aws:dynamodb:eu-west-1:1:table/t/stream/x", order_events_batch_size=7
    )
    app = create_app(Fakes().dependencies, settings)
    [source] = [source for source in app.event_sources if source.name == "publish_order_events"]
    assert source.stream_arn == "arn:aws:dynamodb:eu-west-1:1:table/t/stream/x"  # type: ignore[attr-defined]
    assert source.batch_size == 7  # type: ignore[attr-defined]
    assert source.starting_position == "TRIM_HORIZON"  # type: ignore[attr-defined]
