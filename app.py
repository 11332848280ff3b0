"""Chalice wiring: the routes and event handlers, each delegating to chalicelib with the process's dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalice.app import (
    AuthRequest,
    Chalice,
    CloudWatchEvent,
    DynamoDBEvent,
    KinesisEvent,
    Rate,
    Request,
    Response,
    SQSEvent,
    WebsocketEvent,
)

from chalicelib import bootstrap
from chalicelib.config import Settings, get_settings
from chalicelib.entrypoints import auth, error_shape

if TYPE_CHECKING:
    from chalicelib.service.dependencies import Dependencies

# Every function (the API, the authorizer, each consumer) is a Lambda function
# of its own whose handler is in this module, so each imports it all on its
# cold start. The entrypoint each handler delegates to is imported in the
# handler's body instead, on its first call: a function pays only for its own
# (the authorizer does without pydantic's request models, placement without
# the OpenAPI document, the API without Powertools' batch processing).
# bench/cold_start.py measures each; tests/unit/test_import_hygiene.py keeps
# them apart.

APP_NAME = "brokerage-orders"

# The dependencies are asked for on every invocation, not at import: the
# deployed app builds them on first use (bootstrap.production), tests pass
# theirs, and importing this module stays free of I/O.
DependenciesSource = Callable[[], "Dependencies"]


def create_app(dependencies: DependenciesSource, settings: Settings | None = None) -> Chalice:
    """The app, its handlers running with whatever `dependencies()` returns; settings name the event sources."""
    settings = settings or get_settings()
    app = Chalice(app_name=APP_NAME)
    # Chalice's WebSocket support is experimental: `chalice package` refuses
    # the WebSocket handlers below unless the app opts in.
    app.experimental_feature_flags.update(["WEBSOCKETS"])
    # Registered first, so the outermost: it sees every other middleware's answer (see error_shape.py).
    app.register_middleware(error_shape.with_our_error_shape, "http")
    authorizer = _add_authorizer(app, dependencies, settings.fallback_usage_key or None)
    _add_order_routes(app, authorizer, dependencies)
    _add_order_event_routes(app, authorizer, dependencies)
    _add_docs_routes(app)
    _add_event_handlers(app, dependencies, settings)
    _add_order_stream_handlers(app, dependencies, settings)
    # Last, over every route: API Gateway's usage plans (per-account rate limits) need the flag.
    auth.require_usage_plan_keys(app)
    return app


def _current_request(app: Chalice) -> Request:
    request = app.current_request
    assert request is not None  # Chalice sets it for every route invocation
    return request


def _add_authorizer(
    app: Chalice, dependencies: DependenciesSource, fallback_usage_key: str | None
) -> auth.RequestOrTokenAuthorizer:
    # Every order route requires an API key; the docs do not. Chalice packages
    # this as a Lambda function of its own; the deployed API calls it as a
    # REQUEST authorizer without caching, and devstack/api_server.py does the
    # same locally (see chalicelib/entrypoints/auth.py and docs/deploy.md).
    @auth.accepting_request_events(app)
    @app.authorizer(ttl_seconds=0)
    def api_key_authorizer(auth_request: AuthRequest) -> auth.AuthResult:
        deps = dependencies()
        return auth.authorize(
            auth_request,
            deps.api_keys,
            rate_limits=deps.account_rate_limits,
            fallback_usage_key=fallback_usage_key,
        )

    # A read-only key's POST/PATCH/DELETE is the app's 403, on AWS and locally alike (see auth.py).
    app.register_middleware(auth.refuse_writes_with_read_only_keys, "http")
    return api_key_authorizer


def _add_order_routes(
    app: Chalice, authorizer: auth.RequestOrTokenAuthorizer, dependencies: DependenciesSource
) -> None:
    def current_request() -> Request:
        return _current_request(app)

    @app.route("/orders", methods=["POST"], authorizer=authorizer)
    def post_order() -> Response:
        from chalicelib.entrypoints import http  # noqa: PLC0415 - on first call (see top)

        return http.post_order(current_request(), dependencies())

    @app.route("/orders", methods=["GET"], authorizer=authorizer)
    def list_orders() -> Response:
        from chalicelib.entrypoints import http  # noqa: PLC0415 - on first call (see top)

        return http.list_orders(current_request(), dependencies())

    @app.route("/orders", methods=["DELETE"], authorizer=authorizer)
    def cancel_all_orders() -> Response:
        from chalicelib.entrypoints import bulk_cancel  # noqa: PLC0415 - on first call (see top)

        return bulk_cancel.cancel_all(current_request(), dependencies())

    @app.route("/orders/by-client-order-id/{client_order_id}", methods=["GET"], authorizer=authorizer)
    def get_order_by_client_order_id(client_order_id: str) -> Response:
        from chalicelib.entrypoints import order_lookup  # noqa: PLC0415 - on first call (see top)

        return order_lookup.get_order_by_client_order_id(current_request(), client_order_id, dependencies())

    @app.route("/orders/{order_id}", methods=["GET"], authorizer=authorizer)
    def get_order(order_id: str) -> Response:
        from chalicelib.entrypoints import http  # noqa: PLC0415 - on first call (see top)

        return http.get_order(current_request(), order_id, dependencies())

    @app.route("/orders/{order_id}", methods=["DELETE"], authorizer=authorizer)
    def cancel_order(order_id: str) -> Response:
        from chalicelib.entrypoints import http  # noqa: PLC0415 - on first call (see top)

        return http.cancel_order(current_request(), order_id, dependencies())

    @app.route("/orders/{order_id}", methods=["PATCH"], authorizer=authorizer)
    def replace_order(order_id: str) -> Response:
        from chalicelib.entrypoints import order_replace  # noqa: PLC0415 - on first call (see top)

        return order_replace.replace_order(current_request(), order_id, dependencies())

    @app.route("/orders/{order_id}/executions", methods=["GET"], authorizer=authorizer)
    def get_executions(order_id: str) -> Response:
        from chalicelib.entrypoints import http  # noqa: PLC0415 - on first call (see top)

        return http.get_executions(current_request(), order_id, dependencies())


def _add_order_event_routes(
    app: Chalice, authorizer: auth.RequestOrTokenAuthorizer, dependencies: DependenciesSource
) -> None:
    @app.route("/events", methods=["GET"], authorizer=authorizer)
    def list_order_events() -> Response:
        from chalicelib.entrypoints import event_query  # noqa: PLC0415 - on first call (see top)

        return event_query.list_events(_current_request(app), dependencies())

    # A read-only key may ask for a token too (auth.py exempts this route).
    @app.route("/stream/tokens", methods=["POST"], authorizer=authorizer)
    def create_stream_token() -> Response:
        from chalicelib.entrypoints import event_query  # noqa: PLC0415 - on first call (see top)

        return event_query.create_stream_token(_current_request(app), dependencies())


def _add_docs_routes(app: Chalice) -> None:
    @app.route("/openapi.json", methods=["GET"])
    def get_openapi_document() -> Response:
        request = app.current_request
        assert request is not None  # Chalice sets it for every route invocation
        from chalicelib.entrypoints import openapi  # noqa: PLC0415 - on first call (see top)

        return openapi.openapi_response(request.context)

    @app.route("/docs", methods=["GET"])
    def get_docs() -> Response:
        from chalicelib.entrypoints import docs_page  # noqa: PLC0415 - on first call (see top)

        return docs_page.docs_page()

    @app.route("/docs/{asset}", methods=["GET"])
    def get_docs_asset(asset: str) -> Response:
        from chalicelib.entrypoints import docs_page  # noqa: PLC0415 - on first call (see top)

        return docs_page.docs_asset(asset)


def _add_event_handlers(app: Chalice, dependencies: DependenciesSource, settings: Settings) -> None:
    @app.on_sqs_message(
        queue=settings.orders_queue_name,
        batch_size=settings.placement_batch_size,
        maximum_batching_window_in_seconds=settings.placement_batch_window_s,
        maximum_concurrency=settings.placement_max_concurrency,
    )
    def place_orders(event: SQSEvent) -> dict[str, Any]:
        from chalicelib.entrypoints import orders_queue  # noqa: PLC0415 - on first call (see top)

        return orders_queue.handle_batch(event.to_dict(), event.context, dependencies=dependencies())

    @app.schedule(Rate(1, unit=Rate.MINUTES))
    def sweep_pending_orders(event: CloudWatchEvent) -> None:
        from chalicelib.entrypoints import sweep  # noqa: PLC0415 - on first call (see top)

        sweep.sweep(event.to_dict(), event.context, dependencies=dependencies())

    @app.schedule(Rate(settings.reconcile_interval_min, unit=Rate.MINUTES))
    def reconcile_orders(event: CloudWatchEvent) -> None:
        from chalicelib.entrypoints import reconcile  # noqa: PLC0415 - on first call (see top)

        reconcile.reconcile(event.to_dict(), event.context, dependencies=dependencies())

    @app.on_kinesis_record(
        stream=settings.executions_stream_name,
        batch_size=settings.executions_batch_size,
        starting_position="TRIM_HORIZON",
        maximum_batching_window_in_seconds=settings.executions_batch_window_s,
    )
    def apply_executions(event: KinesisEvent) -> dict[str, Any]:
        from chalicelib.entrypoints import executions  # noqa: PLC0415 - on first call (see top)

        return executions.handle_batch(event.to_dict(), event.context, dependencies=dependencies())


def _add_order_stream_handlers(app: Chalice, dependencies: DependenciesSource, settings: Settings) -> None:
    # The order events: derived from the orders table's stream, logged, and
    # pushed to the WebSocket connections of each event's account.
    @app.on_dynamodb_record(
        stream_arn=settings.orders_table_stream_arn,
        batch_size=settings.order_events_batch_size,
        starting_position="TRIM_HORIZON",
        maximum_batching_window_in_seconds=1,
    )
    def publish_order_events(event: DynamoDBEvent) -> dict[str, Any]:
        from chalicelib.entrypoints import order_stream  # noqa: PLC0415 - on first call (see top)

        return order_stream.handle_batch(event.to_dict(), event.context, dependencies=dependencies())

    # API Gateway's WebSocket API (locally devstack's stream server) calls
    # these; they push through Dependencies.stream.pusher, never through
    # app.websocket_api (which would need boto3).
    @app.on_ws_connect()
    def stream_connect(event: WebsocketEvent) -> Response:
        from chalicelib.entrypoints import stream  # noqa: PLC0415 - on first call (see top)

        return stream.on_connect(event, dependencies())

    @app.on_ws_message()
    def stream_message(event: WebsocketEvent) -> None:
        from chalicelib.entrypoints import stream  # noqa: PLC0415 - on first call (see top)

        stream.on_message(event, dependencies())

    @app.on_ws_disconnect()
    def stream_disconnect(event: WebsocketEvent) -> None:
        from chalicelib.entrypoints import stream  # noqa: PLC0415 - on first call (see top)

        stream.on_disconnect(event, dependencies())

    # A revoked key's connections are closed within a minute of `ops keys revoke`.
    @app.schedule(Rate(1, unit=Rate.MINUTES))
    def close_revoked_stream_connections(event: CloudWatchEvent) -> None:
        from chalicelib.entrypoints import stream  # noqa: PLC0415 - on first call (see top)

        stream.close_revoked(event.to_dict(), event.context, dependencies=dependencies())


app = create_app(bootstrap.production)

# Lambda finds each function by its handler string, "app.<function name>"
# (Chalice names them so when it packages the app), hence module attributes
# of these names; the API's routes all run in `app` itself.
api_key_authorizer = app.handler_map["api_key_authorizer"]
place_orders = app.handler_map["place_orders"]
sweep_pending_orders = app.handler_map["sweep_pending_orders"]
reconcile_orders = app.handler_map["reconcile_orders"]
apply_executions = app.handler_map["apply_executions"]
publish_order_events = app.handler_map["publish_order_events"]
stream_connect = app.handler_map["stream_connect"]
stream_message = app.handler_map["stream_message"]
stream_disconnect = app.handler_map["stream_disconnect"]
close_revoked_stream_connections = app.handler_map["close_revoked_stream_connections"]
