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
    role_statements,
)

pytestmark = pytest.mark.integration


# --- What each function may do: derived from the code (see the scan test below) ----------

ORDERS_TABLE = getatt("OrdersTable")
PENDING_SWEEP_INDEX = {"Fn::Sub": "${OrdersTable.Arn}/index/pending-sweep"}
ACCOUNT_ORDERS_INDEX = {"Fn::Sub": "${OrdersTable.Arn}/index/account-orders"}
RECONCILE_ORDERS_INDEX = {"Fn::Sub": "${OrdersTable.Arn}/index/reconcile-orders"}
ACCOUNT_OPEN_ORDERS_INDEX = {"Fn::Sub": "${OrdersTable.Arn}/index/account-open-orders"}
ACCOUNT_KEYS_INDEX = {"Fn::Sub": "${ApiKeysTable.Arn}/index/account-keys"}
ACCOUNTS_TABLE = getatt("AccountsTable")
EXCHANGE_CREDENTIAL_SECRET = {"Ref": "ExchangeCredentialSecret"}
DATA_KEY = getatt("DataKey")
# Every function reads or writes something encrypted with the data key.
DATA_KEY_USE = ("kms:Decrypt", "kms:GenerateDataKey")
FEED_CHECKPOINTS_TABLE = getatt("FeedCheckpointsTable")
API_KEYS_TABLE = getatt("ApiKeysTable")
EXECUTIONS_TABLE = getatt("ExecutionsTable")
ORDERS_QUEUE = getatt("OrdersQueue")
ORDERS_DEAD_LETTER_QUEUE = getatt("OrdersDeadLetterQueue")
EXECUTIONS_FAILED_QUEUE = getatt("ExecutionsFailedQueue")
EXECUTIONS_STREAM = getatt("ExecutionsStream")
ORDER_EVENTS_TABLE = getatt("OrderEventsTable")
STREAM_CONNECTIONS_TABLE = getatt("StreamConnectionsTable")
ORDER_EVENTS_FAILED_QUEUE = getatt("OrderEventsFailedQueue")
ORDERS_TABLE_STREAM = getatt("OrdersTable", "StreamArn")
# IAM has no resource-level permissions for these actions: "*" is the only resource.
WILDCARD_ONLY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "kinesis:ListStreams", "dynamodb:ListStreams"}
# Used by the Lambda service on the function's behalf, not by our code.
SQS_MAPPING = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
KINESIS_MAPPING = {
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
}
DYNAMODB_STREAM_MAPPING = {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"}


def _pairs(resource: dict[str, Any] | str, *actions: str) -> set[tuple[str, str]]:
    return {(action, key(resource)) for action in actions}


def _runtime(handler: str) -> set[tuple[str, str]]:
    """Its own log group's streams (the stack creates the group first), and X-Ray (tracing is Active)."""
    log_group = getatt(str(build_template.function_logical_ids(handler)[2]))
    return (
        _pairs(log_group, "logs:CreateLogStream", "logs:PutLogEvents")
        | _pairs("*", "xray:PutTraceSegments", "xray:PutTelemetryRecords")
        | _pairs(DATA_KEY, *DATA_KEY_USE)
    )


EXPECTED_GRANTS: dict[str, set[tuple[str, str]]] = {
    # POST: conditional PutItem, GetItem on an idempotent repeat, then the
    # placement message; GET /orders/{id}: GetItem; GET .../executions: GetItem + Query;
    # GET /orders: Query on the account-orders index; DELETE: GetItem + UpdateItem.
    # POST also checks the account's risk limits (GetItem on the accounts
    # table, a COUNT Query of its open orders) and, for a market order, the
    # venue's reference price (the venue credential).
    "api_handler": _pairs(ORDERS_TABLE, "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem")
    | _pairs(ACCOUNT_ORDERS_INDEX, "dynamodb:Query")
    | _pairs(ACCOUNT_OPEN_ORDERS_INDEX, "dynamodb:Query")
    | _pairs(ACCOUNTS_TABLE, "dynamodb:GetItem")
    | _pairs(EXECUTIONS_TABLE, "dynamodb:Query")
    | _pairs(ORDERS_QUEUE, "sqs:GetQueueUrl", "sqs:SendMessage")
    | _pairs(EXCHANGE_CREDENTIAL_SECRET, "secretsmanager:GetSecretValue")
    # GET /events: a Query of the account's events after the cursor (GetItem of
    # the head to tell an unknown cursor); POST /stream/tokens: a token item.
    | _pairs(ORDER_EVENTS_TABLE, "dynamodb:Query", "dynamodb:GetItem")
    | _pairs(STREAM_CONNECTIONS_TABLE, "dynamodb:PutItem"),
    # One GetItem per request: the caller's key; at most once a minute an
    # UpdateItem of its last_used_at alone (a condition on the grant, checked
    # below). Keys are created and revoked by the operator, never by a function.
    # At most once a minute per account, a GetItem of its usage key (the usage
    # identifier its rate limit's usage plan knows it by).
    "api_key_authorizer": _pairs(API_KEYS_TABLE, "dynamodb:GetItem", "dynamodb:UpdateItem")
    | _pairs(ACCOUNTS_TABLE, "dynamodb:GetItem"),
    # Read the order, settle it with UpdateItem; backoff by ChangeMessageVisibility;
    # after an ambiguous outcome a new, delayed placement message (SendMessage)
    # asks the exchange again; an order the exchange confirms it never got
    # goes to the dead-letter queue.
    "place_orders": _pairs(ORDERS_TABLE, "dynamodb:GetItem", "dynamodb:UpdateItem")
    | _pairs(ORDERS_QUEUE, "sqs:GetQueueUrl", "sqs:ChangeMessageVisibility", "sqs:SendMessage", *SQS_MAPPING)
    | _pairs(ORDERS_DEAD_LETTER_QUEUE, "sqs:GetQueueUrl", "sqs:SendMessage")
    | _pairs(EXCHANGE_CREDENTIAL_SECRET, "secretsmanager:GetSecretValue"),
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
    | _pairs(FEED_CHECKPOINTS_TABLE, "dynamodb:GetItem", "dynamodb:PutItem")
    | _pairs(EXCHANGE_CREDENTIAL_SECRET, "secretsmanager:GetSecretValue"),
    # BatchGetItem the batch's orders, UpdateItem each (GetItem after a lost
    # race); BatchWriteItem the executions; poison reports and (the Lambda
    # service) failed batches to the executions-failed queue. It never reads
    # the executions table back: no Query there.
    "apply_executions": _pairs(ORDERS_TABLE, "dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:UpdateItem")
    | _pairs(EXECUTIONS_TABLE, "dynamodb:BatchWriteItem")
    | _pairs(EXECUTIONS_FAILED_QUEUE, "sqs:GetQueueUrl", "sqs:SendMessage")
    | _pairs(EXECUTIONS_STREAM, *KINESIS_MAPPING)
    | _pairs("*", "kinesis:ListStreams"),
    # The orders table's stream (the Lambda service reads it); the executions
    # of a filled order (Query); the log's head (GetItem), a TransactWriteItems
    # of head UpdateItem and event/mark PutItems, the marks of changes logged
    # before (GetItem); the account's listener items (a consistent Query of
    # its partition in the same table), and DeleteItem of a gone connection
    # and its listener; poison records (the function) and failed batches
    # (the Lambda service) to the order-events-failed queue. Pushing: test_package_stream.py.
    "publish_order_events": _pairs(ORDERS_TABLE_STREAM, *DYNAMODB_STREAM_MAPPING)
    | _pairs("*", "dynamodb:ListStreams")
    | _pairs(EXECUTIONS_TABLE, "dynamodb:Query")
    | _pairs(ORDER_EVENTS_TABLE, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
    | _pairs(ORDER_EVENTS_TABLE, "dynamodb:Query", "dynamodb:DeleteItem")
    | _pairs(STREAM_CONNECTIONS_TABLE, "dynamodb:DeleteItem")
    | _pairs(ORDER_EVENTS_FAILED_QUEUE, "sqs:GetQueueUrl", "sqs:SendMessage"),
    # The key as the authorizer checks it (and records its use), or a token
    # redeemed with one DeleteItem (ALL_OLD) and its key read; then the connection's item.
    "websocket_connect": _pairs(API_KEYS_TABLE, "dynamodb:GetItem", "dynamodb:UpdateItem")
    | _pairs(STREAM_CONNECTIONS_TABLE, "dynamodb:DeleteItem", "dynamodb:PutItem"),
    # listen: the connection (GetItem) and its key re-checked (GetItem), the
    # head and the replay (GetItem, Query), start listening (UpdateItem of the
    # connection, PutItem of its listener item in the events table); a gone
    # connection forgotten with its listener.
    "websocket_message": _pairs(
        STREAM_CONNECTIONS_TABLE, "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"
    )
    | _pairs(API_KEYS_TABLE, "dynamodb:GetItem")
    | _pairs(ORDER_EVENTS_TABLE, "dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem"),
    # The connection and its listener item.
    "websocket_disconnect": _pairs(STREAM_CONNECTIONS_TABLE, "dynamodb:DeleteItem")
    | _pairs(ORDER_EVENTS_TABLE, "dynamodb:DeleteItem"),
    # Every minute: Scan the connections, read each one's key, forget the closed (and their listeners).
    "close_revoked_stream_connections": _pairs(STREAM_CONNECTIONS_TABLE, "dynamodb:Scan", "dynamodb:DeleteItem")
    | _pairs(ORDER_EVENTS_TABLE, "dynamodb:DeleteItem")
    | _pairs(API_KEYS_TABLE, "dynamodb:GetItem"),
}
# Who records a key's use (UpdateItem of last_used_at, conditioned): whoever checks keys.
KEY_USE_RECORDERS = ("api_key_authorizer", "websocket_connect")


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
    # KMS is called by DynamoDB, SQS, Kinesis and Secrets Manager on the function's behalf.
    service_side = (
        SQS_MAPPING
        | KINESIS_MAPPING
        | DYNAMODB_STREAM_MAPPING
        | WILDCARD_ONLY
        | {"logs:CreateLogStream", "logs:PutLogEvents", *DATA_KEY_USE}
    )
    return {(action, resource) for action, resource in everything if action not in service_side}


# PynamoDB calls of the adapters and the DynamoDB action each makes.
PYNAMODB_ACTIONS = {
    "get": "dynamodb:GetItem",
    "save": "dynamodb:PutItem",
    "update": "dynamodb:UpdateItem",
    "batch_get": "dynamodb:BatchGetItem",
    "batch_write": "dynamodb:BatchWriteItem",
    "query": "dynamodb:Query",
    "scan": "dynamodb:Scan",
    "delete": "dynamodb:DeleteItem",
    # PynamoDB's table connection (`connection.delete_item(...)`, with ALL_OLD: a token redeemed once).
    "delete_item": "dynamodb:DeleteItem",
}
# Record-class methods that make no call.
PYNAMODB_LOCAL = {"from_raw_data", "_get_connection"}
# Calls of a table adapter's own botocore client (DynamoDBTable.client) and the actions IAM checks for them.
TABLE_CLIENT_ACTIONS = {"transact_write_items": ("dynamodb:PutItem", "dynamodb:UpdateItem")}
# The WebSocket management API: execute-api:ManageConnections, granted and checked in test_package_stream.py.
MANAGEMENT_API = "apigatewaymanagementapi"
# The table each adapter module's records live in (the only modules that use
# PynamoDB); queries on `index` go to the orders table's index last assigned
# to `index` (`index: Any = self._records.pending_sweep`); a call on a record
# made in place (`self._records(key, ...).save()`) goes to the module's table.
ADAPTER_TABLES = {
    "orders_table.py": ORDERS_TABLE,
    "executions_table.py": EXECUTIONS_TABLE,
    "api_keys.py": API_KEYS_TABLE,
    "cursor_table.py": FEED_CHECKPOINTS_TABLE,
    "accounts_table.py": ACCOUNTS_TABLE,
    # Counts with a Query through PynamoDB's connection (`connection.query(...)`).
    "open_orders.py": ACCOUNT_OPEN_ORDERS_INDEX,
    "order_events_table.py": ORDER_EVENTS_TABLE,
    "stream_connections_table.py": STREAM_CONNECTIONS_TABLE,
    # The stream's listener items live in the order events table's account partitions.
    "stream_listeners_table.py": ORDER_EVENTS_TABLE,
}
# What the table adapters share (chalicelib/adapters/dynamodb.py): PynamoDB, but no call of any table.
PYNAMODB_HELPERS = "dynamodb.py"
INDEX_ATTRIBUTES = {
    "pending_sweep": PENDING_SWEEP_INDEX,
    "account_orders": ACCOUNT_ORDERS_INDEX,
    "reconcile": RECONCILE_ORDERS_INDEX,
    "account_keys": ACCOUNT_KEYS_INDEX,
}
# Calls the code makes that no function may: `python -m ops keys create /
# revoke / list` and `ops accounts set`, as the operator role
# (docs/operations.md). The authorizer's UpdateItem of last_used_at is the
# one conditioned exception, checked on its own.
OPERATOR_ONLY = (
    _pairs(API_KEYS_TABLE, "dynamodb:PutItem", "dynamodb:UpdateItem")
    | _pairs(ACCOUNT_KEYS_INDEX, "dynamodb:Query")
    | _pairs(ACCOUNTS_TABLE, "dynamodb:UpdateItem")
)


def test_the_code_makes_no_aws_call_iam_does_not_know_of(packaged: Packaged) -> None:
    """Scans chalicelib for boto3 client and PynamoDB calls, so a new call fails here until IAM grants it."""
    called: set[tuple[str, str]] = set()
    for path in sorted((REPO / "chalicelib").rglob("*.py")):
        # PynamoDB's table connection, however it is reached, is `connection` below.
        source = path.read_text(encoding="utf-8").replace("self._records._get_connection().", "connection.")
        services = set(re.findall(r"\.(?:create_)?client\(\s*\"(\w+)\"", source))
        for method in re.findall(r"\.(?:client|_client_locked\(\))\.(\w+)\(", source):
            if path.name in ADAPTER_TABLES and not services:
                assert method in TABLE_CLIENT_ACTIONS, f"{path}: client.{method}() - add its IAM actions to this test"
                called |= {(action, key(ADAPTER_TABLES[path.name])) for action in TABLE_CLIENT_ACTIONS[method]}
                continue
            assert len(services) == 1, f"{path}: expected the one boto3 client this module creates"
            if services == {MANAGEMENT_API}:
                continue
            action = f"{next(iter(services))}:" + "".join(word.capitalize() for word in method.split("_"))
            # One adapter serves every queue; which queue a function may use is the IAM table's business.
            called |= {
                (action, key(queue))
                for queue in (
                    ORDERS_QUEUE,
                    ORDERS_DEAD_LETTER_QUEUE,
                    EXECUTIONS_FAILED_QUEUE,
                    ORDER_EVENTS_FAILED_QUEUE,
                )
            }
        if not re.search(r"^\s*(?:from|import) pynamodb\b", source, re.MULTILINE):
            continue  # uses no PynamoDB (observability.py names it only as what X-Ray traces)
        made_in_place = r"self\._records\((?:[^()]|\([^()]*\))*\)"
        pattern = (
            r"\bindex\b(?:\s*:[^=\n]*)?\s*=\s*\w+(?:\._records)?\.(\w+)\b"
            rf"|\b({made_in_place}|self\._records|records|record|index|connection)\.(\w+)\("
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
            if method in PYNAMODB_LOCAL:
                continue
            assert method in PYNAMODB_ACTIONS, f"{path}: {receiver}.{method}() - add its IAM action to this test"
            table = index if receiver == "index" else ADAPTER_TABLES[path.name]
            assert table is not None, f"{path}: index.{method}() before any index was assigned"
            called.add((PYNAMODB_ACTIONS[method], key(table)))
    granted = _granted_by_code(packaged.template)
    granted_actions = {action for action, _ in granted}
    assert called >= OPERATOR_ONLY, "the operator-only calls are gone: drop them from OPERATOR_ONLY"
    unconditioned = set().union(
        *(grants(packaged.template, role_of(packaged.template, function_id(h)), conditioned=False) for h in HANDLERS)
    )
    assert not OPERATOR_ONLY & unconditioned, "no function may create or revoke API keys or set risk limits"
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
    assert environment["EXCHANGE_CREDENTIAL_SECRET_NAME"] == {"Fn::Sub": "${ResourcePrefix}-exchange-credential"}
    assert grants(packaged.template, "FeedBridgeTaskRole") == (
        _pairs(EXECUTIONS_STREAM, "kinesis:PutRecords")
        | _pairs(getatt("FeedCheckpointsTable"), "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
        | _pairs(EXCHANGE_CREDENTIAL_SECRET, "secretsmanager:GetSecretValue")
        | _pairs(DATA_KEY, *DATA_KEY_USE)
    )


IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/feed-bridge@sha256:" + "ab" * 32


def _evaluate(value: Any, parameters: dict[str, str]) -> Any:
    """Fn::Join / Fn::Select / Fn::Split / Ref as CloudFormation evaluates them, for the given parameters."""
    if isinstance(value, list):
        return [_evaluate(item, parameters) for item in value]
    if not isinstance(value, dict):
        return value
    ((function, argument),) = value.items()
    if function == "Ref":
        return {"AWS::Partition": "aws"}.get(argument, parameters.get(argument))
    if function == "Fn::Join":
        return argument[0].join(_evaluate(argument[1], parameters))
    if function == "Fn::Select":
        return _evaluate(argument[1], parameters)[int(argument[0])]
    if function == "Fn::Split":
        return _evaluate(argument[1], parameters).split(argument[0])
    raise AssertionError(f"not evaluated here: {function}")


def test_the_bridge_pulls_only_its_own_image_by_digest(packaged: Packaged) -> None:
    parameters = packaged.template["Parameters"]
    pattern = parameters["FeedBridgeImage"]["AllowedPattern"]
    assert re.fullmatch(pattern, "") and re.fullmatch(pattern, IMAGE)
    for unpinned in (
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/feed-bridge:latest",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/feed-bridge@sha256:abc",
        "docker.io/library/feed-bridge@sha256:" + "ab" * 32,
    ):
        assert not re.fullmatch(pattern, unpinned), unpinned
    statements = role_statements(packaged.template, "FeedBridgeExecutionRole")
    (pull,) = [statement for statement in statements if "ecr:BatchGetImage" in statement["Action"]]
    repository = _evaluate(pull["Resource"], {"FeedBridgeImage": IMAGE})
    assert repository == "arn:aws:ecr:eu-west-1:123456789012:repository/team/feed-bridge"
    wildcards = [statement["Action"] for statement in statements if statement["Resource"] == "*"]
    assert wildcards == ["ecr:GetAuthorizationToken"]  # the registry login has no resource-level permissions


def test_the_bridge_may_only_reach_https_and_the_feeds_port(packaged: Packaged) -> None:
    group = packaged.resources["FeedBridgeSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group
    https, feed_port = group["SecurityGroupEgress"]
    assert (https["IpProtocol"], https["FromPort"], https["ToPort"]) == ("tcp", 443, 443)
    # The venue's own port only when it is not 443 (a duplicate rule is refused).
    condition, rule, otherwise = feed_port["Fn::If"]
    assert condition == "FeedPortIsNotHttps" and otherwise == {"Ref": "AWS::NoValue"}
    assert rule["FromPort"] == rule["ToPort"] == {"Ref": "ExchangeFeedPort"} and rule["IpProtocol"] == "tcp"


def test_the_authorizer_may_update_only_the_last_use_of_a_key(packaged: Packaged) -> None:
    role_id = role_of(packaged.template, function_id("api_key_authorizer"))
    (update,) = [s for s in role_statements(packaged.template, role_id) if "dynamodb:UpdateItem" in s["Action"]]
    assert update["Action"] == ["dynamodb:UpdateItem"] and update["Resource"] == API_KEYS_TABLE
    # ForAllValues: every attribute the request names is one of these (the key, and last_used_at).
    assert update["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:Attributes": ["key_id", "last_used_at"]}}
    # The stream's $connect checks keys as the authorizer does: the same statement.
    connect_role = role_of(packaged.template, function_id("websocket_connect"))
    (connect_update,) = [
        s for s in role_statements(packaged.template, connect_role) if "dynamodb:UpdateItem" in s["Action"]
    ]
    assert connect_update == update
    # No other statement of any function has a condition that could widen or narrow a grant unseen.
    for handler in HANDLERS:
        conditioned = grants(packaged.template, role_of(packaged.template, function_id(handler)), conditioned=True)
        assert conditioned == (_pairs(API_KEYS_TABLE, "dynamodb:UpdateItem") if handler in KEY_USE_RECORDERS else set())


def test_only_the_operator_role_writes_keys_and_risk_limits(packaged: Packaged) -> None:
    resources = packaged.resources
    writes = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}
    guarded = {key(API_KEYS_TABLE), key(ACCOUNTS_TABLE)}
    writers = {
        role_id
        for role_id, resource in resources.items()
        if resource["Type"] == "AWS::IAM::Role"
        and any(action in writes and table in guarded for action, table in grants(packaged.template, role_id))
    }
    recorders = {role_of(packaged.template, function_id(handler)) for handler in KEY_USE_RECORDERS}
    assert writers == {"OperatorRole", *recorders}
    operator = grants(packaged.template, "OperatorRole")
    guarded_keys = {key(API_KEYS_TABLE), key(ACCOUNT_KEYS_INDEX), key(ACCOUNTS_TABLE), key(DATA_KEY)}
    assert {pair for pair in operator if pair[1] in guarded_keys} == (
        _pairs(API_KEYS_TABLE, "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query")
        | _pairs(API_KEYS_TABLE, "dynamodb:UpdateItem")
        | _pairs(ACCOUNT_KEYS_INDEX, "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query")
        | _pairs(ACCOUNT_KEYS_INDEX, "dynamodb:UpdateItem")
        | _pairs(ACCOUNTS_TABLE, "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
        | _pairs(DATA_KEY, *DATA_KEY_USE)
    )
    # The operator tool's own calls are all granted to the role; elsewhere it writes only orders (a reopen).
    assert set(OPERATOR_ONLY) <= operator
    writes_elsewhere = {pair for pair in operator if pair[0] in writes and pair[1] not in guarded_keys}
    assert writes_elsewhere == _pairs(ORDERS_TABLE, "dynamodb:UpdateItem")
    trust = resources["OperatorRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [statement["Action"] for statement in trust] == ["sts:AssumeRole"]


def test_the_keys_and_accounts_tables_deny_writes_to_everyone_but_the_operator(packaged: Packaged) -> None:
    """A resource policy with explicit Denies: it holds even against a principal with account-wide DynamoDB writes."""

    def role(name: str) -> dict[str, str]:
        return {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${ResourcePrefix}-" + name}

    key_checkers = ["operator", "api-key-authorizer", "websocket-connect"]
    for table, updaters in (("ApiKeysTable", key_checkers), ("AccountsTable", ["operator"])):
        statements = packaged.resources[table]["Properties"]["ResourcePolicy"]["PolicyDocument"]["Statement"]
        assert all(statement["Effect"] == "Deny" and statement["Principal"] == "*" for statement in statements)
        denied: dict[str, Any] = {}
        for statement in statements:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            excepted = statement["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
            for action in actions:
                denied[action] = excepted if isinstance(excepted, list) else [excepted]
        assert denied == {
            "dynamodb:PutItem": [role("operator")],
            "dynamodb:DeleteItem": [role("operator")],
            "dynamodb:BatchWriteItem": [role("operator")],
            "dynamodb:UpdateItem": [role(name) for name in updaters],
        }, table
        # The names the roles are given (the operator's in operations.yaml, the authorizer's by build_template).
        assert packaged.resources["OperatorRole"]["Properties"]["RoleName"] == {"Fn::Sub": "${ResourcePrefix}-operator"}
        authorizer_role = role_of(packaged.template, function_id("api_key_authorizer"))
        assert packaged.resources[authorizer_role]["Properties"]["RoleName"] == {
            "Fn::Sub": "${ResourcePrefix}-api-key-authorizer"
        }
