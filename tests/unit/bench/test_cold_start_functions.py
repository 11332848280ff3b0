"""bench/cold_start.py measures every function `chalice package` makes of app.py, each given its trigger's event."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chalice.app import DynamoDBEventConfig, KinesisEventConfig, ScheduledEventConfig, SQSEventConfig
from chalice.config import Config
from chalice.deploy.appgraph import ApplicationGraphBuilder, DependencyBuilder
from chalice.deploy.models import LambdaFunction

import app as application
from bench.cold_start import functions
from chalicelib.entrypoints.order_stream import order_change_of

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[3]


def packaged_functions() -> dict[str, str]:
    """Function name -> its handler's attribute of app.py, for every Lambda function Chalice's deployer builds.

    The application graph `chalice package` and `chalice deploy` build their
    output from: one function for the routes ("app.app"), one per authorizer,
    one per event handler, one per WebSocket route.
    """
    config = Config.create(
        chalice_stage="dev",
        chalice_app=application.app,
        project_dir=str(REPO_ROOT),
        config_from_disk=json.loads((REPO_ROOT / ".chalice" / "config.json").read_text(encoding="utf-8")),
    )
    graph = ApplicationGraphBuilder().build(config, "dev")
    return {
        resource.resource_name: resource.handler.removeprefix("app.")
        for resource in DependencyBuilder().build_dependencies(graph)
        if isinstance(resource, LambdaFunction)
    }


def test_every_function_chalice_packages_has_its_cold_start_measured() -> None:
    packaged, measured = packaged_functions(), {function.name: function.handler for function in functions()}
    missing = sorted(set(packaged) - set(measured))
    assert not missing, f"bench/cold_start.py never measures {missing}: add each in bench/cold_start_events.py"
    unknown = sorted(set(measured) - set(packaged))
    assert not unknown, f"bench/cold_start.py measures {unknown}, which Chalice does not package"
    wrong = {name: handler for name, handler in measured.items() if packaged[name] != handler}
    assert not wrong, f"bench/cold_start.py calls the wrong handler of app.py for {wrong}: Chalice's are {packaged}"
    assert {"api_handler", "api_key_authorizer", "websocket_connect"} <= set(packaged)  # the graph saw them all


def _records_from(source: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: bool(event["Records"]) and all(r["eventSource"] == source for r in event["Records"])


# What each kind of trigger sends (chalice's event source configs of app.app.event_sources).
TRIGGERS: dict[type, Callable[[dict[str, Any]], bool]] = {
    SQSEventConfig: _records_from("aws:sqs"),
    KinesisEventConfig: _records_from("aws:kinesis"),
    DynamoDBEventConfig: _records_from("aws:dynamodb"),
    ScheduledEventConfig: lambda event: event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events",
}


def test_each_function_is_given_the_event_its_trigger_sends() -> None:
    sources = {source.name: source for source in application.app.event_sources}
    websocket_routes = {config.name: route for route, config in application.app.websocket_handlers.items()}
    authorizers = {config.name for config in application.app.builtin_auth_handlers}
    for function in functions():
        event, handler = function.event, function.handler
        if handler in sources:
            assert TRIGGERS[type(sources[handler])](event), function.name
        elif handler in websocket_routes:
            assert event["requestContext"]["routeKey"] == websocket_routes[handler], function.name
        elif handler in authorizers:
            assert event["type"] == "REQUEST", function.name
        else:
            assert handler == "app", function.name  # the routes' function: a proxy event of one of its routes
            assert event["httpMethod"] in application.app.routes[event["resource"]], function.name


def test_the_order_events_function_is_given_an_order_change_not_a_poison_record() -> None:
    # An unreadable record would only be set aside: the publisher's first call would not log nor push.
    [function] = [function for function in functions() if function.name == "publish_order_events"]
    changes = [order_change_of(record) for record in function.event["Records"]]
    assert changes and all(change is not None and change.before is None for change in changes)
