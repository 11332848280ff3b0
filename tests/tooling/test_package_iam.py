"""What each function and the feed bridge may do: the roles of the packaged stack, held against the code.

The grants are derived from the code: a scan of chalicelib for boto3 and
PynamoDB calls fails when the code makes a call IAM does not grant, or IAM
grants one the code never makes.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.tooling.template_support import (
    HANDLERS,
    REPO,
    Packaged,
    build_template,
    function_id,
    getatt,
    grants,
    key,
    role_of,
)

pytestmark = pytest.mark.integration


# --- What each function may do: derived from the code (see the scan test below) ----------

ORDERS_TABLE = getatt("OrdersTable")
PENDING_SWEEP_INDEX = {"Fn::Sub": "${OrdersTable.Arn}/index/pending-sweep"}
ACCOUNT_ORDERS_INDEX = {"Fn::Sub": "${OrdersTable.Arn}/index/account-orders"}
RECONCILE_ORDERS_INDEX = {"Fn::Sub": "${OrdersTable.Arn}/index/reconcile-orders"}
FEED_CHECKPOINTS_TABLE = getatt("FeedCheckpointsTable")
API_KEYS_TABLE = getatt("ApiKeysTable")
EXECUTIONS_TABLE = getatt("ExecutionsTable")
ORDERS_QUEUE = getatt("OrdersQueue")
ORDERS_DEAD_LETTER_QUEUE = getatt("OrdersDeadLetterQueue")
EXECUTIONS_FAILED_QUEUE = getatt("ExecutionsFailedQueue")
EXECUTIONS_STREAM = getatt("ExecutionsStream")
# IAM has no resource-level permissions for these actions: "*" is the only resource.
WILDCARD_ONLY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "kinesis:ListStreams"}
# Used by the Lambda service on the function's behalf, not by our code.
SQS_MAPPING = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
KINESIS_MAPPING = {
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
}


def _pairs(resource: dict[str, Any] | str, *actions: str) -> set[tuple[str, str]]:
    return {(action, key(resource)) for action in actions}


def _runtime(handler: str) -> set[tuple[str, str]]:
    """Its own log group's streams (the stack creates the group first), and X-Ray (tracing is Active)."""
    log_group = getatt(str(build_template.function_logical_ids(handler)[2]))
    return _pairs(log_group, "logs:CreateLogStream", "logs:PutLogEvents") | _pairs(
        "*", "xray:PutTraceSegments", "xray:PutTelemetryRecords"
    )


EXPECTED_GRANTS: dict[str, set[tuple[str, str]]] = {
    # POST: conditional PutItem, GetItem on an idempotent repeat, then the
    # placement message; GET /orders/{id}: GetItem; GET .../executions: GetItem + Query;
    # GET /orders: Query on the account-orders index; DELETE: GetItem + UpdateItem.
    "api_handler": _pairs(ORDERS_TABLE, "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem")
    | _pairs(ACCOUNT_ORDERS_INDEX, "dynamodb:Query")
    | _pairs(EXECUTIONS_TABLE, "dynamodb:Query")
    | _pairs(ORDERS_QUEUE, "sqs:GetQueueUrl", "sqs:SendMessage"),
    # One GetItem per request: the caller's key. Keys are created and revoked
    # by the operator tool, never by a function.
    "api_key_authorizer": _pairs(API_KEYS_TABLE, "dynamodb:GetItem"),
    # Read the order, settle it with UpdateItem; backoff by ChangeMessageVisibility;
    # after an ambiguous outcome a new, delayed placement message (SendMessage)
    # asks the exchange again; an order the exchange confirms it never got
    # goes to the dead-letter queue.
    "place_orders": _pairs(ORDERS_TABLE, "dynamodb:GetItem", "dynamodb:UpdateItem")
    | _pairs(ORDERS_QUEUE, "sqs:GetQueueUrl", "sqs:ChangeMessageVisibility", "sqs:SendMessage", *SQS_MAPPING)
    | _pairs(ORDERS_DEAD_LETTER_QUEUE, "sqs:GetQueueUrl", "sqs:SendMessage"),
    # Query the sparse index, re-read and touch each order, re-send its message.
    "sweep_pending_orders": _pairs(PENDING_SWEEP_INDEX, "dynamodb:Query")
    | _pairs(ORDERS_TABLE, "dynamodb:GetItem", "dynamodb:UpdateItem")
    | _pairs(ORDERS_QUEUE, "sqs:GetQueueUrl", "sqs:SendMessage"),
    # Query the sparse index from the cursor, BatchGetItem the orders found,
    # UpdateItem each it repairs (GetItem after a lost race); the cursor is
    # one item of the checkpoints table (GetItem, PutItem). It calls the
    # exchange over HTTP, which IAM has no say in.
    "reconcile_orders": _pairs(RECONCILE_ORDERS_INDEX, "dynamodb:Query")
    | _pairs(ORDERS_TABLE, "dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:UpdateItem")
    | _pairs(FEED_CHECKPOINTS_TABLE, "dynamodb:GetItem", "dynamodb:PutItem"),
    # BatchGetItem the batch's orders, UpdateItem each (GetItem after a lost
    # race); BatchWriteItem the executions; poison reports and (the Lambda
    # service) failed batches to the executions-failed queue. It never reads
    # the executions table back: no Query there.
    "apply_executions": _pairs(ORDERS_TABLE, "dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:UpdateItem")
    | _pairs(EXECUTIONS_TABLE, "dynamodb:BatchWriteItem")
    | _pairs(EXECUTIONS_FAILED_QUEUE, "sqs:GetQueueUrl", "sqs:SendMessage")
    | _pairs(EXECUTIONS_STREAM, *KINESIS_MAPPING)
    | _pairs("*", "kinesis:ListStreams"),
}


# --- IAM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("handler", HANDLERS)
def test_each_function_may_do_exactly_what_its_code_does(packaged: Packaged, handler: str) -> None:
    role_id = role_of(packaged.template, function_id(handler))
    assert role_id == build_template.function_logical_ids(handler)[1]
    granted = grants(packaged.template, role_id)
    expected = EXPECTED_GRANTS[handler] | _runtime(handler)
    assert granted - expected == set(), "granted but not used"
    assert expected - granted == set(), "used but not granted"
    wildcards = {action for action, resource in granted if resource == key("*")}
    assert wildcards <= WILDCARD_ONLY


def _granted_by_code(template: dict[str, Any]) -> set[tuple[str, str]]:
    everything = set().union(*(grants(template, role_of(template, function_id(h))) for h in HANDLERS))
    service_side = SQS_MAPPING | KINESIS_MAPPING | WILDCARD_ONLY | {"logs:CreateLogStream", "logs:PutLogEvents"}
    return {(action, resource) for action, resource in everything if action not in service_side}


# PynamoDB calls of the adapters and the DynamoDB action each makes.
PYNAMODB_ACTIONS = {
    "get": "dynamodb:GetItem",
    "save": "dynamodb:PutItem",
    "update": "dynamodb:UpdateItem",
    "batch_get": "dynamodb:BatchGetItem",
    "batch_write": "dynamodb:BatchWriteItem",
    "query": "dynamodb:Query",
}
# The table each adapter module's records live in (the only modules that use
# PynamoDB); queries on `index` go to the orders table's index last assigned
# to `index` (`index: Any = self._records.pending_sweep`); a call on a record
# made in place (`self._records(key, ...).save()`) goes to the module's table.
ADAPTER_TABLES = {
    "orders_table.py": ORDERS_TABLE,
    "executions_table.py": EXECUTIONS_TABLE,
    "api_keys.py": API_KEYS_TABLE,
    "cursor_table.py": FEED_CHECKPOINTS_TABLE,
}
# What the table adapters share (chalicelib/adapters/dynamodb.py): PynamoDB, but no call of any table.
PYNAMODB_HELPERS = "dynamodb.py"
INDEX_ATTRIBUTES = {
    "pending_sweep": PENDING_SWEEP_INDEX,
    "account_orders": ACCOUNT_ORDERS_INDEX,
    "reconcile": RECONCILE_ORDERS_INDEX,
}
# Calls the code makes that no function may: `python -m ops keys create /
# revoke`, with the operator's own credentials (docs/operations.md).
OPERATOR_ONLY = _pairs(API_KEYS_TABLE, "dynamodb:PutItem", "dynamodb:UpdateItem")


def test_the_code_makes_no_aws_call_iam_does_not_know_of(packaged: Packaged) -> None:
    """Scans chalicelib for boto3 client and PynamoDB calls, so a new call fails here until IAM grants it."""
    called: set[tuple[str, str]] = set()
    for path in sorted((REPO / "chalicelib").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        services = set(re.findall(r"\.(?:create_)?client\(\s*\"(\w+)\"", source))
        for method in re.findall(r"\.client\.(\w+)\(", source):
            assert len(services) == 1, f"{path}: expected the one boto3 client this module creates"
            action = f"{next(iter(services))}:" + "".join(word.capitalize() for word in method.split("_"))
            # One adapter serves every queue; which queue a function may use is the IAM table's business.
            called |= {
                (action, key(queue)) for queue in (ORDERS_QUEUE, ORDERS_DEAD_LETTER_QUEUE, EXECUTIONS_FAILED_QUEUE)
            }
        if not re.search(r"^\s*(?:from|import) pynamodb\b", source, re.MULTILINE):
            continue  # uses no PynamoDB (observability.py names it only as what X-Ray traces)
        made_in_place = r"self\._records\((?:[^()]|\([^()]*\))*\)"
        pattern = (
            r"\bindex\b[^=\n]*=\s*\w+(?:\._records)?\.(\w+)\b"
            rf"|\b({made_in_place}|self\._records|record|index)\.(\w+)\("
        )
        if path.name == PYNAMODB_HELPERS:
            assert not re.findall(pattern, source), f"{path}: table calls belong in a table's adapter"
            continue
        assert path.name in ADAPTER_TABLES, f"{path}: PynamoDB outside the adapters this test knows"
        index = None
        for assigned, receiver, method in re.findall(pattern, source):
            if assigned:
                assert assigned in INDEX_ATTRIBUTES, f"{path}: index {assigned} - add it to this test"
                index = INDEX_ATTRIBUTES[assigned]
                continue
            assert method in PYNAMODB_ACTIONS, f"{path}: {receiver}.{method}() - add its IAM action to this test"
            table = index if receiver == "index" else ADAPTER_TABLES[path.name]
            assert table is not None, f"{path}: index.{method}() before any index was assigned"
            called.add((PYNAMODB_ACTIONS[method], key(table)))
    granted = _granted_by_code(packaged.template)
    granted_actions = {action for action, _ in granted}
    assert called >= OPERATOR_ONLY, "the operator-only calls are gone: drop them from OPERATOR_ONLY"
    assert not OPERATOR_ONLY & granted, "no function may create or revoke API keys"
    # Every action the code calls is granted, on the resource the adapter is for...
    for action, resource in called - OPERATOR_ONLY:
        if action.startswith("dynamodb:"):
            assert (action, resource) in granted, (action, resource)
        else:
            assert action in granted_actions, action
    # ...and nothing is granted that the code never calls.
    assert granted_actions == {action for action, _ in called - OPERATOR_ONLY}
    assert {pair for pair in granted if pair[0].startswith("dynamodb:")} <= called


# --- The feed bridge ------------------------------------------------------------------------


def test_the_feed_bridge_is_one_fargate_task_with_its_own_least_privilege(packaged: Packaged) -> None:
    from feed_bridge.settings import BridgeSettings

    resources = packaged.resources
    bridge = {k: v for k, v in resources.items() if k.startswith("FeedBridge")}
    assert all(resource.get("Condition") == "DeployFeedBridge" for resource in bridge.values())
    task = resources["FeedBridgeTaskDefinition"]["Properties"]
    assert task["RequiresCompatibilities"] == ["FARGATE"] and task["NetworkMode"] == "awsvpc"
    (container,) = task["ContainerDefinitions"]
    environment = {item["Name"]: item["Value"] for item in container["Environment"]}
    assert environment["EXECUTIONS_STREAM_NAME"] == {"Ref": "ExecutionsStream"}
    assert environment["FEED_CHECKPOINTS_TABLE_NAME"] == {"Ref": "FeedCheckpointsTable"}
    assert environment["EXCHANGE_FEED_URL"] == {"Ref": "ExchangeFeedUrl"}
    assert environment["FEED_ID"] == {"Ref": "FeedId"}
    # ECS waits StopTimeout after SIGTERM: longer than the bridge's own flush grace.
    assert container["StopTimeout"] > BridgeSettings.model_fields["feed_shutdown_grace_s"].default
    service = resources["FeedBridgeService"]["Properties"]
    assert service["LaunchType"] == "FARGATE" and service["DesiredCount"] == 1
    # Never two bridges on one feed, not even during a deployment.
    assert service["DeploymentConfiguration"]["MaximumPercent"] == 100
    assert grants(packaged.template, "FeedBridgeTaskRole") == _pairs(EXECUTIONS_STREAM, "kinesis:PutRecords") | _pairs(
        getatt("FeedCheckpointsTable"), "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"
    )
