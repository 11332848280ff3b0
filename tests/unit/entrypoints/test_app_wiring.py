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
    }
    assert set(registered) == {
        "place_orders",
        "sweep_pending_orders",
        "reconcile_orders",
        "apply_executions",
        "api_key_authorizer",
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
