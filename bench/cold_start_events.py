"""The first invocation bench/cold_start.py gives each function `chalice package` makes of app.py.

Chalice packages one Lambda function for all the routes (api_handler, handler
`app.app`), one per authorizer, one per event handler (SQS, Kinesis, DynamoDB
stream, schedule) and, for the WebSocket API, one per route: websocket_connect,
websocket_message and websocket_disconnect (chalice/deploy/appgraph.py,
`_create_websocket_api_model`), whose handlers are app.py's stream_connect,
stream_message and stream_disconnect. Each gets the event its trigger sends,
built as the local stack builds it (devstack/runner/events.py,
devstack/stream_server.py), and the Dependencies adapters whose AWS clients
its path uses: against nothing, the path stops at its first call, so the probe
creates the clients of the rest. tests/unit/bench/test_cold_start_functions.py
holds the list to what Chalice packages.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any, NamedTuple

from chalice.app import Chalice
from websockets.datastructures import Headers
from websockets.http11 import Request

from bench.common import execution_reports_event
from devstack.lambda_context import DEFAULT_ACCOUNT, FunctionSpec
from devstack.runner.events import dynamodb_stream_event, scheduled_event, sqs_event
from devstack.stream_server import LiveConnection, WebSocketGateway

REGION = "us-east-1"
API_STAGE = "api"
ORDER_ID = "00000000-0000-4000-8000-000000000000"
ACCOUNT_ID = "cold-start-bench"
API_KEY = "bk_" + "a" * 12 + "_" + "b" * 43  # well-formed, so the authorizer (and $connect) does look it up
CONNECTION_ID = "Y29sZC1zdGFydA="  # API Gateway's look: 16 URL-safe characters
ARN_PREFIX = f"{REGION}:{DEFAULT_ACCOUNT}"


class FirstInvocation(NamedTuple):
    """One packaged function: its name, its handler attribute of app.py, its first event and the AWS clients it uses."""

    name: str  # as Chalice names it (the .chalice/config.json key)
    handler: str  # the attribute of app.py Lambda calls ("app" for the routes' function)
    event: dict[str, Any]
    # Dependencies fields (dotted for nested ones, e.g. "stream.pusher") whose clients the path would create.
    adapters: tuple[str, ...]


def api_event() -> dict[str, Any]:
    """API Gateway's proxy event of GET /orders/{order_id}, past the authorizer (REST API, the deployed shape).

    A read rather than a create: both import the same modules (chalicelib's
    HTTP entrypoint and its models), but a create whose write is refused
    reads back for 5 s before it answers.
    """
    headers = {"accept": "application/json", "x-api-key": API_KEY}
    return {
        "resource": "/orders/{order_id}",
        "path": f"/orders/{ORDER_ID}",
        "httpMethod": "GET",
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"order_id": ORDER_ID},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/orders/{order_id}",
            "httpMethod": "GET",
            "path": f"/{API_STAGE}/orders/{ORDER_ID}",
            "stage": API_STAGE,
            "requestId": "cold-start-bench",
            "authorizer": {"account_id": ACCOUNT_ID, "principalId": ACCOUNT_ID},
        },
        "body": None,
        "isBase64Encoded": False,
    }


def authorizer_event() -> dict[str, Any]:
    """The REQUEST authorizer's event of GET /orders with an API key."""
    return {
        "type": "REQUEST",
        "methodArn": f"arn:aws:execute-api:{ARN_PREFIX}:abc/{API_STAGE}/GET/orders",
        "headers": {"x-api-key": API_KEY},
    }


def placement_event() -> dict[str, Any]:
    """One placement message of the orders queue, as Lambda's SQS mapping passes it."""
    message = {
        "MessageId": "m-1",
        "ReceiptHandle": "r-1",
        "Body": json.dumps({"order_id": ORDER_ID, "correlation_id": None, "action": "place"}),
        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764590400000"},
    }
    return sqs_event([message], f"arn:aws:sqs:{ARN_PREFIX}:brokerage-cold-start-orders", REGION)


def execution_report_event() -> dict[str, Any]:
    """One fill of the order on the executions stream, as the feed bridge puts it."""
    report = {
        "seq": 1,
        "exec_id": "e-1",
        "client_order_id": ORDER_ID,
        "exchange_order_id": "x-1",
        "exec_type": "trade",
        "last_qty": 1,
        "last_price": "1.5",
        "cum_qty": 1,
        "leaves_qty": 0,
        "avg_price": "1.5",
        "transact_time": "2026-12-01T12:00:00Z",
    }
    stream_arn = f"arn:aws:kinesis:{ARN_PREFIX}:stream/brokerage-cold-start-executions"
    return execution_reports_event([report], 1, stream_arn, FunctionSpec("apply_executions", region=REGION))


def order_created_event() -> dict[str, Any]:
    """The orders table stream's INSERT of a new limit order, as the runner passes a DynamoDB Streams batch."""
    created = {"S": "2026-12-01T12:00:00.000000+0000"}
    image = {
        "id": {"S": ORDER_ID},
        "account_id": {"S": ACCOUNT_ID},
        "type": {"S": "limit"},
        "side": {"S": "buy"},
        "instrument": {"S": "US0378331005"},
        "quantity": {"N": "10"},
        "limit_price": {"S": "187.25"},
        "time_in_force": {"S": "day"},
        "status": {"S": "pending"},
        "created_at": created,
        "updated_at": created,
        "attempts": {"N": "0"},
        "filled_quantity": {"N": "0"},
        "pending_shard": {"N": "0"},
        "sweep_after": {"S": "2026-12-01T12:01:00.000000+0000"},
        "reconcile_shard": {"N": "0"},
        "open_account_id": {"S": ACCOUNT_ID},
        "version": {"N": "1"},
    }
    record = {  # a GetRecords record, as boto3 hands it back
        "eventID": "cold-start-1",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": {
            "ApproximateCreationDateTime": datetime.datetime(2026, 12, 1, 12, tzinfo=datetime.UTC),
            "Keys": {"id": {"S": ORDER_ID}},
            "NewImage": image,
            "SequenceNumber": "100000000000000000001",
            "SizeBytes": 400,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }
    stream_arn = f"arn:aws:dynamodb:{ARN_PREFIX}:table/brokerage-cold-start-orders/stream/2026-12-01T00:00:00.000"
    return dynamodb_stream_event([record], stream_arn)


def schedule_event(function: str) -> dict[str, Any]:
    return scheduled_event(f"arn:aws:events:{ARN_PREFIX}:rule/brokerage-cold-start-{function}", REGION)


def websocket_events() -> dict[str, dict[str, Any]]:
    """Route -> the event devstack's stream server sends a connection's handler: $connect with an API key, a
    listen on $default, $disconnect."""
    gateway = WebSocketGateway(Chalice(ACCOUNT_ID), "bench", API_STAGE)  # with no handlers: only its events
    try:
        host = "127.0.0.1:8003"
        live = LiveConnection(CONNECTION_ID, "127.0.0.1", "cold-start-bench", host, 1_764_590_400_000, asyncio.Queue())
        handshake = {
            "Host": host,
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
            "User-Agent": "cold-start-bench",
            "x-api-key": API_KEY,
        }
        return {
            "$connect": gateway.connect_event(live, Request("/", Headers(handshake))),
            "$default": gateway.message_event(live, json.dumps({"action": "listen"})),
            "$disconnect": gateway.disconnect_event(live),
        }
    finally:
        gateway.shutdown_handlers()  # its handler threads: none were started


def first_invocations() -> list[FirstInvocation]:
    """Every function Chalice packages, with the event its usual first invocation gets and the clients it uses."""
    ws = websocket_events()
    stream = ("stream.connections", "api_keys", "stream.pusher")  # a connection, its key, the management API
    return [
        # Creates check the account's limits, write the table and send to the queue; the other routes read the
        # executions, the event log or issue stream tokens.
        FirstInvocation(
            "api_handler",
            "app",
            api_event(),
            ("orders", "orders_queue", "risk.account_limits", "executions", "stream.event_log", "stream.tokens"),
        ),
        FirstInvocation(
            "api_key_authorizer", "api_key_authorizer", authorizer_event(), ("api_keys", "account_rate_limits")
        ),
        # Placement puts a failed attempt back on the queue with a delay, an order the exchange never got in the DLQ.
        FirstInvocation(
            "place_orders", "place_orders", placement_event(), ("orders", "orders_queue", "orders_dead_letter_queue")
        ),
        FirstInvocation(
            "sweep_pending_orders", "sweep_pending_orders", schedule_event("sweep"), ("orders", "orders_queue")
        ),
        FirstInvocation(
            "reconcile_orders", "reconcile_orders", schedule_event("reconcile"), ("reconciler_cursor", "orders")
        ),
        FirstInvocation(
            "apply_executions",
            "apply_executions",
            execution_report_event(),
            ("orders", "executions", "executions_failed_queue"),
        ),
        # Logs the order's events, pushes them to its account's listeners; an unreadable record goes to its queue.
        FirstInvocation(
            "publish_order_events",
            "publish_order_events",
            order_created_event(),
            ("stream.event_log", "stream.connections", "stream.pusher", "order_events_failed_queue", "executions"),
        ),
        FirstInvocation(
            "close_revoked_stream_connections", "close_revoked_stream_connections", schedule_event("close"), stream
        ),
        # $connect checks the key (or redeems a token) and records the connection.
        FirstInvocation(
            "websocket_connect", "stream_connect", ws["$connect"], ("api_keys", "stream.tokens", "stream.connections")
        ),
        # A listen replays the account's events to the connection (an error goes back through the pusher too).
        FirstInvocation("websocket_message", "stream_message", ws["$default"], (*stream, "stream.event_log")),
        FirstInvocation("websocket_disconnect", "stream_disconnect", ws["$disconnect"], ("stream.connections",)),
    ]
