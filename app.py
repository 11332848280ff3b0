"""Chalice wiring: routes and event handlers, each delegating to chalicelib."""

from __future__ import annotations

from typing import Any

from chalice.app import AuthRequest, Chalice, CloudWatchEvent, KinesisEvent, Rate, Response, SQSEvent

from chalicelib.config import get_settings
from chalicelib.entrypoints import auth, executions, http, openapi, placement

settings = get_settings()
app = Chalice(app_name="brokerage-orders")


# Every order route requires an API key; the docs do not. Chalice packages
# this as a Lambda function of its own; the deployed API calls it as a
# REQUEST authorizer without caching, and devstack/api_server.py does the
# same locally (see chalicelib/entrypoints/auth.py and docs/deploy.md).
@auth.accepting_request_events(app)
@app.authorizer(ttl_seconds=0)
def api_key_authorizer(auth_request: AuthRequest) -> auth.AuthResult:
    return auth.authorize(auth_request)


@app.route("/orders", methods=["POST"], authorizer=api_key_authorizer)
def post_order() -> Response:
    request = app.current_request
    assert request is not None  # Chalice sets it for every route invocation
    return http.post_order(request)


@app.route("/orders", methods=["GET"], authorizer=api_key_authorizer)
def list_orders() -> Response:
    request = app.current_request
    assert request is not None  # Chalice sets it for every route invocation
    return http.list_orders(request)


@app.route("/orders/{order_id}", methods=["GET"], authorizer=api_key_authorizer)
def get_order(order_id: str) -> Response:
    request = app.current_request
    assert request is not None  # Chalice sets it for every route invocation
    return http.get_order(request, order_id)


@app.route("/orders/{order_id}", methods=["DELETE"], authorizer=api_key_authorizer)
def cancel_order(order_id: str) -> Response:
    request = app.current_request
    assert request is not None  # Chalice sets it for every route invocation
    return http.cancel_order(request, order_id)


@app.route("/orders/{order_id}/executions", methods=["GET"], authorizer=api_key_authorizer)
def get_executions(order_id: str) -> Response:
    request = app.current_request
    assert request is not None  # Chalice sets it for every route invocation
    return http.get_executions(request, order_id)


@app.route("/openapi.json", methods=["GET"])
def get_openapi_document() -> Response:
    request = app.current_request
    assert request is not None  # Chalice sets it for every route invocation
    return openapi.openapi_response(request.context)


@app.route("/docs", methods=["GET"])
def get_docs() -> Response:
    return openapi.docs_page()


@app.route("/docs/{asset}", methods=["GET"])
def get_docs_asset(asset: str) -> Response:
    return openapi.docs_asset(asset)


@app.on_sqs_message(
    queue=settings.orders_queue_name,
    batch_size=settings.placement_batch_size,
    maximum_batching_window_in_seconds=settings.placement_batch_window_s,
)
def place_orders(event: SQSEvent) -> dict[str, Any]:
    return placement.handle_batch(event.to_dict(), event.context)


@app.schedule(Rate(1, unit=Rate.MINUTES))
def sweep_pending_orders(event: CloudWatchEvent) -> None:
    placement.sweep(event.to_dict(), event.context)


@app.on_kinesis_record(
    stream=settings.executions_stream_name,
    batch_size=settings.executions_batch_size,
    starting_position="TRIM_HORIZON",
    maximum_batching_window_in_seconds=settings.executions_batch_window_s,
)
def apply_executions(event: KinesisEvent) -> dict[str, Any]:
    return executions.handle_batch(event.to_dict(), event.context)
