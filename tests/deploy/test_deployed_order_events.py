"""The deployed order events (issue 16): their tables, the orders-table stream mapping, the stream's functions.

As in test_deployed_stack.py, every function here is the deployed one, run by
LocalStack from the deployment zip. LocalStack community has no API Gateway
v2: there `make test-deploy` deploys with WebSocketApi=disabled, and the
WebSocket functions are invoked with the events API Gateway would send them
(docs/deploy.md says what only AWS shows).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from chalicelib.service.accounts import create_api_key, revoke_api_key
from tests.deploy.support import (
    DeployedStack,
    allowed_context,
    authorizer_event,
    invoke,
    proxy_event,
    websocket_event,
)
from tests.polling import wait_until

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(420)]

ISIN = "DE0007164600"
STREAM_FUNCTIONS = (
    "publish_order_events",
    "close_revoked_stream_connections",
    "websocket_connect",
    "websocket_message",
    "websocket_disconnect",
)


def test_the_order_event_tables_and_the_orders_tables_stream_are_deployed(deployed: DeployedStack) -> None:
    dynamodb, outputs = deployed.client("dynamodb"), deployed.outputs
    orders = dynamodb.describe_table(TableName=outputs["OrdersTableName"])["Table"]
    assert orders["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert orders["LatestStreamArn"] == outputs["OrdersTableStreamArn"]
    events = dynamodb.describe_table(TableName=outputs["OrderEventsTableName"])["Table"]
    assert {k["AttributeName"]: k["KeyType"] for k in events["KeySchema"]} == {"account_id": "HASH", "entry": "RANGE"}
    connections = dynamodb.describe_table(TableName=outputs["StreamConnectionsTableName"])["Table"]
    # No index: the publisher reads listeners from the event log's partition, strongly consistent.
    assert {k["AttributeName"]: k["KeyType"] for k in connections["KeySchema"]} == {"connection_id": "HASH"}
    assert "GlobalSecondaryIndexes" not in connections
    for table in ("OrderEventsTableName", "StreamConnectionsTableName"):
        ttl = dynamodb.describe_time_to_live(TableName=outputs[table])["TimeToLiveDescription"]
        assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at"), table
        assert dynamodb.describe_table(TableName=outputs[table])["Table"]["SSEDescription"]["SSEType"] == "KMS"


def test_the_orders_table_stream_mapping_is_enabled_with_the_settings_chalice_cannot_set(
    deployed: DeployedStack,
) -> None:
    lambda_client = deployed.client("lambda")
    found = lambda_client.list_event_source_mappings(FunctionName=deployed.function_names["publish_order_events"])
    (mapping,) = found["EventSourceMappings"]
    assert mapping["EventSourceArn"] == deployed.outputs["OrdersTableStreamArn"]
    assert mapping["State"] == "Enabled"
    assert (mapping["StartingPosition"], mapping["BatchSize"]) == ("TRIM_HORIZON", 100)
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert (mapping["MaximumRetryAttempts"], mapping["MaximumRecordAgeInSeconds"]) == (-1, 86400)
    destination = mapping["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == deployed.outputs["OrderEventsFailedQueueArn"]


def test_the_stream_functions_run_the_deployed_configuration(deployed: DeployedStack) -> None:
    lambda_client, outputs = deployed.client("lambda"), deployed.outputs
    for handler in STREAM_FUNCTIONS:
        variables = lambda_client.get_function_configuration(FunctionName=deployed.function_names[handler])[
            "Environment"
        ]["Variables"]
        assert variables["ORDER_EVENTS_TABLE_NAME"] == outputs["OrderEventsTableName"], handler
        assert variables["STREAM_CONNECTIONS_TABLE_NAME"] == outputs["StreamConnectionsTableName"], handler
        assert variables["ORDERS_TABLE_STREAM_ARN"] == outputs["OrdersTableStreamArn"], handler
        pushes = handler in ("publish_order_events", "websocket_message", "close_revoked_stream_connections")
        if deployed.websocket_api and pushes:
            api = outputs["WebsocketAPIId"]
            assert variables["STREAM_MANAGEMENT_URL"] == f"https://{api}.execute-api.us-east-1.amazonaws.com/api"
        else:
            # Left out without the API (WebSocketApi=disabled) and for the functions that never push.
            assert "STREAM_MANAGEMENT_URL" not in variables, handler


def test_the_websocket_api_exists_exactly_where_the_target_has_api_gateway_v2(deployed: DeployedStack) -> None:
    if not deployed.websocket_api:
        # WebSocketApi=disabled: no placeholder API, no URL that leads nowhere.
        assert "StreamUrl" not in deployed.outputs and "WebsocketAPIId" not in deployed.outputs
        return
    api_id = deployed.outputs["WebsocketAPIId"]
    assert deployed.outputs["StreamUrl"] == f"wss://{api_id}.execute-api.us-east-1.amazonaws.com/api"
    api = deployed.client("apigatewayv2").get_api(ApiId=api_id)
    assert (api["ProtocolType"], api["RouteSelectionExpression"]) == ("WEBSOCKET", "$request.body.action")


def test_an_order_placed_and_filled_through_the_stack_is_in_its_accounts_event_log(
    deployed: DeployedStack, api_keys: Any, bridge: Any
) -> None:
    """The orders table's stream -> LocalStack's mapping -> the deployed publish_order_events -> GET /events."""
    account = f"deploy-events-{uuid.uuid4().hex[:6]}"
    key = create_api_key(account, "deploy test", api_keys).plaintext
    decision = invoke(
        deployed.client("lambda"),
        deployed.function_names["api_key_authorizer"],
        authorizer_event(deployed.api_id, {"x-api-key": key}),
    )
    context = allowed_context(decision.payload)

    def call(event: dict[str, Any]) -> tuple[int, Any]:
        result = invoke(deployed.client("lambda"), deployed.function_names["api_handler"], event)
        assert result.function_error is None, result.payload
        return int(result.payload["statusCode"]), json.loads(result.payload["body"])

    body = {"type": "market", "side": "buy", "instrument": ISIN, "quantity": 5}
    status, order = call(proxy_event(deployed.api_id, "POST", "/orders", body=body, authorizer=context))
    assert status == 201, order

    def logged_until_filled() -> list[dict[str, Any]] | None:
        status, page = call(proxy_event(deployed.api_id, "GET", "/events", authorizer=context, query={"limit": "100"}))
        assert status == 200, page
        events = list(page["events"])
        return events if events and events[-1]["type"] == "fill" else None

    events = wait_until(logged_until_filled, timeout_s=150, interval_s=2)
    assert [event["order"]["id"] for event in events] == [order["id"]] * len(events)
    assert [event["type"] for event in events[:2]] == ["created", "placed"]
    assert len({event["id"] for event in events}) == len(events)
    assert events[-1]["order"]["filled_quantity"] == 5 and events[-1]["execution"] is not None


def test_the_deployed_connect_and_disconnect_functions_keep_the_connections_table(
    deployed: DeployedStack, api_keys: Any
) -> None:
    """$connect with a valid key stores the connection, with a revoked key refuses it; $disconnect forgets it."""
    lambda_client, table = deployed.client("lambda"), deployed.outputs["StreamConnectionsTableName"]
    account = f"deploy-stream-{uuid.uuid4().hex[:6]}"
    created = create_api_key(account, "deploy test", api_keys)
    connection_id = f"conn-{uuid.uuid4().hex[:10]}="
    connect = websocket_event(deployed.api_id, "$connect", connection_id, headers={"x-api-key": created.plaintext})

    answer = invoke(lambda_client, deployed.function_names["websocket_connect"], connect)

    assert answer.function_error is None and answer.payload["statusCode"] == 200, answer.payload
    stored = deployed.client("dynamodb").get_item(
        TableName=table, Key={"connection_id": {"S": connection_id}}, ConsistentRead=True
    )
    assert stored["Item"]["account_id"]["S"] == account
    assert stored["Item"]["key_id"]["S"] == created.key_id

    disconnect = websocket_event(deployed.api_id, "$disconnect", connection_id)
    answer = invoke(lambda_client, deployed.function_names["websocket_disconnect"], disconnect)
    assert answer.function_error is None, answer.payload
    gone = deployed.client("dynamodb").get_item(
        TableName=table, Key={"connection_id": {"S": connection_id}}, ConsistentRead=True
    )
    assert "Item" not in gone

    revoke_api_key(created.key_id, api_keys)
    refused_id = f"conn-{uuid.uuid4().hex[:10]}="
    refused = websocket_event(deployed.api_id, "$connect", refused_id, headers={"x-api-key": created.plaintext})
    answer = invoke(lambda_client, deployed.function_names["websocket_connect"], refused)
    assert answer.function_error is None and answer.payload["statusCode"] == 401, answer.payload
    assert "message" in json.loads(answer.payload["body"])


def test_the_schedule_runs_the_deployed_close_of_revoked_keys_connections(deployed: DeployedStack) -> None:
    """Every minute: the rule targets the function, and its run goes through (its EMF metric line)."""
    name = deployed.function_names["close_revoked_stream_connections"]
    function_arn = deployed.client("lambda").get_function_configuration(FunctionName=name)["FunctionArn"]
    events = deployed.client("events")
    (rule,) = events.list_rule_names_by_target(TargetArn=function_arn)["RuleNames"]
    assert events.describe_rule(Name=rule)["ScheduleExpression"] == "rate(1 minute)"
    logs = deployed.client("logs")
    group = f"/aws/lambda/{name}"

    def metric_line() -> str | None:
        for stream in logs.describe_log_streams(logGroupName=group).get("logStreams", []):
            for event in logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"])["events"]:
                if '"StreamConnectionsClosed"' in event["message"]:
                    return str(event["message"])
        return None

    assert wait_until(metric_line, timeout_s=150, interval_s=5)
