"""The deployable stack: `chalice package` merged with infra/, checked offline with no AWS account."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chalice.config import Config
from chalice.utils import to_cfn_resource_name

from tests.integration.template_support import (
    CHALICE_CONFIG,
    HANDLERS,
    REPO,
    RESOURCES,
    STAGES,
    Packaged,
    build_template,
    copy_project,
    defaults,
    event_of,
    function_id,
    getatt,
    grants,
    key,
    name_of,
    package_stage,
    referenced_resource,
    resolve_sub,
    role_of,
    stage_environment,
)

pytestmark = pytest.mark.integration

REPORT_BATCH_ITEM_FAILURES = ["ReportBatchItemFailures"]
EVENT_SOURCES = json.loads((REPO / "infra" / "event_sources.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module", params=STAGES)
def packaged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Packaged:
    return package_stage(request.param, tmp_path_factory)


# --- What each function may do: derived from the code (see the scan test below) ----------

ORDERS_TABLE = getatt("OrdersTable")
PENDING_SWEEP_INDEX = {"Fn::Sub": "${OrdersTable.Arn}/index/pending-sweep"}
ACCOUNT_ORDERS_INDEX = {"Fn::Sub": "${OrdersTable.Arn}/index/account-orders"}
API_KEYS_TABLE = getatt("ApiKeysTable")
EXECUTIONS_TABLE = getatt("ExecutionsTable")
ORDERS_QUEUE = getatt("OrdersQueue")
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
    # Read the order, settle it with UpdateItem; backoff by ChangeMessageVisibility.
    "place_orders": _pairs(ORDERS_TABLE, "dynamodb:GetItem", "dynamodb:UpdateItem")
    | _pairs(ORDERS_QUEUE, "sqs:GetQueueUrl", "sqs:ChangeMessageVisibility", *SQS_MAPPING),
    # Query the sparse index, re-read and touch each order, re-send its message.
    "sweep_pending_orders": _pairs(PENDING_SWEEP_INDEX, "dynamodb:Query")
    | _pairs(ORDERS_TABLE, "dynamodb:GetItem", "dynamodb:UpdateItem")
    | _pairs(ORDERS_QUEUE, "sqs:GetQueueUrl", "sqs:SendMessage"),
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


# --- The template as a whole ----------------------------------------------------------


def test_cfn_lint_passes_on_the_deployed_template(packaged: Packaged) -> None:
    assert packaged.lint_findings[packaged.sam_path] == []


def test_no_merged_value_mixes_two_intrinsics(packaged: Packaged) -> None:
    """Chalice's merge is a deep merge of dicts: an override with another intrinsic would keep both keys."""

    def walk(value: Any, path: str) -> Iterator[str]:
        if isinstance(value, dict):
            intrinsic = [k for k in value if k == "Ref" or k.startswith("Fn::")]
            if intrinsic and len(value) > 1:
                yield path
            for name, child in value.items():
                yield from walk(child, f"{path}.{name}")
        elif isinstance(value, list):
            for index, child in enumerate(value):
                yield from walk(child, f"{path}[{index}]")

    assert list(walk(packaged.template, "")) == []


def test_the_infra_resources_are_deployed_as_the_local_stack_has_them(packaged: Packaged) -> None:
    for logical_id, resource in RESOURCES["Resources"].items():
        assert packaged.resources[logical_id] == resource, logical_id
    # Parameters too, but for the values the stage decides (tested below).
    stage_decided = ("Default", "MinValue", "AllowedValues")
    for name, spec in RESOURCES["Parameters"].items():
        deployed = packaged.template["Parameters"][name]
        assert {k: v for k, v in deployed.items() if k not in stage_decided} == {
            k: v for k, v in spec.items() if k not in stage_decided
        }


def test_the_functions_are_the_configured_handlers(packaged: Packaged) -> None:
    functions = {k for k, v in packaged.resources.items() if v["Type"] == "AWS::Serverless::Function"}
    assert functions == {function_id(handler) for handler in HANDLERS}
    for handler in HANDLERS:
        properties = packaged.resources[function_id(handler)]["Properties"]
        name = resolve_sub(properties["FunctionName"], packaged.template["Parameters"])
        assert name == f"brokerage-{packaged.stage}-{handler.replace('_', '-')}"
        assert len(name) <= 64
        assert properties["Runtime"] == "python3.11"
        assert properties["Tracing"] == "Active"


def test_the_resource_names_are_the_stages(packaged: Packaged) -> None:
    parameters = packaged.template["Parameters"]
    prefix = f"brokerage-{packaged.stage}"
    assert parameters["ResourcePrefix"]["Default"] == prefix
    # A different prefix at deploy time would create resources the functions never find.
    assert parameters["ResourcePrefix"]["AllowedValues"] == [prefix]
    names = {
        "ORDERS_TABLE_NAME": ("OrdersTable", f"{prefix}-orders"),
        "ORDERS_QUEUE_NAME": ("OrdersQueue", f"{prefix}-orders"),
        "EXECUTIONS_STREAM_NAME": ("ExecutionsStream", f"{prefix}-executions"),
        "EXECUTIONS_TABLE_NAME": ("ExecutionsTable", f"{prefix}-executions"),
        "EXECUTIONS_FAILED_QUEUE_NAME": ("ExecutionsFailedQueue", f"{prefix}-executions-failed"),
        "API_KEYS_TABLE_NAME": ("ApiKeysTable", f"{prefix}-api-keys"),
    }
    for handler in HANDLERS:
        variables = packaged.resources[function_id(handler)]["Properties"]["Environment"]["Variables"]
        for variable, (logical_id, name) in names.items():
            assert variables[variable] == name_of(logical_id, prefix) == name, variable
        assert variables["EXCHANGE_URL"] == {"Ref": "ExchangeUrl"}


def test_the_venue_url_is_a_parameter_defaulting_to_the_stages_own(packaged: Packaged) -> None:
    """`make test-deploy` points the deployed functions at the simulator through it, not by editing them."""
    parameter = packaged.template["Parameters"]["ExchangeUrl"]
    assert parameter["Default"] == stage_environment(packaged.stage)["EXCHANGE_URL"]
    assert re.fullmatch(parameter["AllowedPattern"], "http://127.0.0.1:8001")
    assert not re.fullmatch(parameter["AllowedPattern"], "ftp://venue.example/")


def test_every_resource_name_the_app_reads_is_set_for_the_stage(packaged: Packaged) -> None:
    from chalicelib.config import Settings

    wanted = {name.upper() for name in Settings.model_fields if name.endswith("_name")}
    assert wanted <= set(stage_environment(packaged.stage))


# --- Event source mappings ------------------------------------------------------------


def test_the_event_source_table_of_build_template_matches_what_chalice_generates(packaged: Packaged) -> None:
    # The merge template addresses each mapping by the event name Chalice
    # generates; a wrong name would add a second, broken event instead.
    generated = {
        handler: name
        for handler in HANDLERS
        for name, event in packaged.plain["Resources"][function_id(handler)]["Properties"].get("Events", {}).items()
        if event["Type"] in ("SQS", "Kinesis")
    }
    assert generated == {
        handler: to_cfn_resource_name(f"{handler}-{kind.lower()}-event-source")
        for handler, kind in build_template.EVENT_SOURCE_KINDS.items()
    }
    assert set(EVENT_SOURCES) <= set(generated)


def test_the_sqs_mapping_reports_batch_item_failures(packaged: Packaged) -> None:
    name, event = event_of(packaged.template, "place_orders")
    assert name == "PlaceOrdersSqsEventSource"
    assert event["Type"] == "SQS"
    properties = event["Properties"]
    assert properties["FunctionResponseTypes"] == REPORT_BATCH_ITEM_FAILURES
    assert EVENT_SOURCES["place_orders"]["function_response_types"] == REPORT_BATCH_ITEM_FAILURES


def test_the_kinesis_mapping_has_what_chalice_cannot_express(packaged: Packaged) -> None:
    name, event = event_of(packaged.template, "apply_executions")
    assert name == "ApplyExecutionsKinesisEventSource"
    assert event["Type"] == "Kinesis"
    properties = event["Properties"]
    settings = EVENT_SOURCES["apply_executions"]
    assert properties["FunctionResponseTypes"] == settings["function_response_types"] == REPORT_BATCH_ITEM_FAILURES
    assert properties["BisectBatchOnFunctionError"] is settings["bisect_batch_on_function_error"] is True
    assert properties["MaximumRetryAttempts"] == settings["maximum_retry_attempts"]
    assert properties["MaximumRecordAgeInSeconds"] == settings["maximum_record_age_in_seconds"]
    # The Output event_sources.json names, as the resource's own Arn.
    assert settings["on_failure_destination_output"] == "ExecutionsFailedQueueArn"
    assert RESOURCES["Outputs"]["ExecutionsFailedQueueArn"]["Value"] == getatt("ExecutionsFailedQueue")
    assert properties["DestinationConfig"] == {"OnFailure": {"Destination": getatt("ExecutionsFailedQueue")}}


@pytest.mark.parametrize(
    ("handler", "source"), [("place_orders", "OrdersQueue"), ("apply_executions", "ExecutionsStream")]
)
def test_a_mapping_names_its_source_by_reference(packaged: Packaged, handler: str, source: str) -> None:
    # Chalice names the queue or stream by an ARN built from its name, which
    # references nothing: CloudFormation could create the mapping before its
    # source, and Lambda refuses a mapping to a source that does not exist.
    _, event = event_of(packaged.template, handler)
    source_property = {"SQS": "Queue", "Kinesis": "Stream"}[event["Type"]]
    assert referenced_resource(event["Properties"][source_property], packaged.template) == source
    # The same resource Chalice's ARN named: the one the code reads, by the stage's name for it.
    _, generated = event_of(packaged.plain, handler)
    arn = resolve_sub(generated["Properties"][source_property], packaged.template["Parameters"])
    assert re.split(r"[:/]", arn)[-1] == name_of(source, f"brokerage-{packaged.stage}")


def test_the_placement_queue_hides_a_message_for_six_function_timeouts(packaged: Packaged) -> None:
    timeout = packaged.resources["PlaceOrders"]["Properties"]["Timeout"]
    spec = packaged.template["Parameters"]["PlacementVisibilityTimeoutSeconds"]
    assert packaged.resources["OrdersQueue"]["Properties"]["VisibilityTimeout"] == {
        "Ref": "PlacementVisibilityTimeoutSeconds"
    }
    assert spec["Default"] >= 6 * timeout
    # A lower value at deploy time is refused by CloudFormation.
    assert spec["MinValue"] >= 6 * timeout


def test_redrive_and_the_functions_attempts_come_from_one_parameter(packaged: Packaged) -> None:
    redrive = packaged.resources["OrdersQueue"]["Properties"]["RedrivePolicy"]
    assert redrive == {
        "deadLetterTargetArn": getatt("OrdersDeadLetterQueue"),
        "maxReceiveCount": {"Ref": "PlacementMaxAttempts"},
    }
    for handler in HANDLERS:
        variables = packaged.resources[function_id(handler)]["Properties"]["Environment"]["Variables"]
        assert variables["PLACEMENT_MAX_ATTEMPTS"] == {"Ref": "PlacementMaxAttempts"}
    configured = int(stage_environment(packaged.stage)["PLACEMENT_MAX_ATTEMPTS"])
    assert packaged.template["Parameters"]["PlacementMaxAttempts"]["Default"] == configured


def test_make_deploy_passes_the_stages_own_parameter_values(packaged: Packaged) -> None:
    values = defaults(packaged.template)
    lines = packaged.parameters_file.splitlines()
    assert lines == [f"{name}={values[name]}" for name in build_template.STAGE_PARAMETERS]


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
# to `index` (`index: Any = self._records.pending_sweep`).
ADAPTER_TABLES = {"dynamodb.py": ORDERS_TABLE, "executions_table.py": EXECUTIONS_TABLE, "api_keys.py": API_KEYS_TABLE}
INDEX_ATTRIBUTES = {"pending_sweep": PENDING_SWEEP_INDEX, "account_orders": ACCOUNT_ORDERS_INDEX}
# Calls the code makes that no function may: `python -m ops keys create /
# revoke`, with the operator's own credentials (docs/operations.md).
OPERATOR_ONLY = _pairs(API_KEYS_TABLE, "dynamodb:PutItem", "dynamodb:UpdateItem")


def test_the_code_makes_no_aws_call_iam_does_not_know_of(packaged: Packaged) -> None:
    """Scans chalicelib for boto3 client and PynamoDB calls, so a new call fails here until IAM grants it."""
    called: set[tuple[str, str]] = set()
    for path in sorted((REPO / "chalicelib").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        services = set(re.findall(r"\.client\(\s*\"(\w+)\"", source))
        for method in re.findall(r"\.client\.(\w+)\(", source):
            assert len(services) == 1, f"{path}: expected the one boto3 client this module creates"
            action = f"{next(iter(services))}:" + "".join(word.capitalize() for word in method.split("_"))
            # One adapter serves both queues; which queue a function may use is the IAM table's business.
            called |= {(action, key(queue)) for queue in (ORDERS_QUEUE, EXECUTIONS_FAILED_QUEUE)}
        if "pynamodb" not in source:
            continue
        assert path.name in ADAPTER_TABLES, f"{path}: PynamoDB outside the adapters this test knows"
        index = None
        pattern = r"\bindex\b[^=\n]*=\s*\w+(?:\._records)?\.(\w+)\b|\b(self\._records|record|index)\.(\w+)\("
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


# --- Logs, alarms, API, bridge -------------------------------------------------------------


def test_every_log_group_has_a_retention_and_each_function_its_own(packaged: Packaged) -> None:
    retention = CHALICE_CONFIG["stages"][packaged.stage]["log_retention_in_days"]
    parameters = packaged.template["Parameters"]
    for logical_id, resource in packaged.resources.items():
        if resource["Type"] == "AWS::Logs::LogGroup":
            assert resource["Properties"]["RetentionInDays"] in (retention, {"Ref": "LogRetentionInDays"}), logical_id
    assert parameters["LogRetentionInDays"]["Default"] == retention
    for handler in HANDLERS:
        function, _, log_group = build_template.function_logical_ids(handler)
        name = resolve_sub(packaged.resources[log_group]["Properties"]["LogGroupName"], parameters)
        assert name == "/aws/lambda/" + resolve_sub(
            packaged.resources[function]["Properties"]["FunctionName"], parameters
        )


def _alarms(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]


def _find_alarm(template: dict[str, Any], namespace: str, metric: str, dimension: Any) -> dict[str, Any]:
    found = [
        alarm
        for alarm in _alarms(template)
        if alarm["Namespace"] == namespace
        and alarm["MetricName"] == metric
        and dimension in [d["Value"] for d in alarm["Dimensions"]]
    ]
    assert len(found) == 1, f"no single {namespace} {metric} alarm on {dimension}"
    return found[0]


def test_alarms_cover_dead_letters_lag_errors_throttles_and_waiting_orders(packaged: Packaged) -> None:
    for queue in ("OrdersDeadLetterQueue", "ExecutionsFailedQueue"):
        alarm = _find_alarm(
            packaged.template, "AWS/SQS", "ApproximateNumberOfMessagesVisible", getatt(queue, "QueueName")
        )
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    oldest = _find_alarm(
        packaged.template, "AWS/SQS", "ApproximateAgeOfOldestMessage", getatt("OrdersQueue", "QueueName")
    )
    assert oldest["ComparisonOperator"] == "GreaterThanThreshold"
    lag = _find_alarm(packaged.template, "AWS/Lambda", "IteratorAge", {"Ref": "ApplyExecutions"})
    assert lag["Threshold"] == {"Ref": "ExecutionsIteratorAgeMilliseconds"}
    for handler in HANDLERS:
        for metric in ("Errors", "Throttles"):
            alarm = _find_alarm(packaged.template, "AWS/Lambda", metric, {"Ref": function_id(handler)})
            assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    for alarm in _alarms(packaged.template):
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_the_api_is_throttled(packaged: Packaged) -> None:
    settings = packaged.resources["RestAPI"]["Properties"]["MethodSettings"]
    assert settings == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": {"Ref": "ApiThrottleRateLimit"},
            "ThrottlingBurstLimit": {"Ref": "ApiThrottleBurstLimit"},
        }
    ]
    plans = [r["Properties"] for r in packaged.resources.values() if r["Type"] == "AWS::ApiGateway::UsagePlan"]
    assert len(plans) == 1
    assert plans[0]["ApiStages"] == [{"ApiId": {"Ref": "RestAPI"}, "Stage": {"Ref": "RestAPI.Stage"}}]
    assert set(plans[0]["Throttle"]) == {"RateLimit", "BurstLimit"}


ORDER_ROUTES = {
    ("/orders", "post"),
    ("/orders", "get"),
    ("/orders/{order_id}", "get"),
    ("/orders/{order_id}", "delete"),
    ("/orders/{order_id}/executions", "get"),
}


def test_every_order_route_has_the_authorizer_as_an_uncached_request_authorizer(packaged: Packaged) -> None:
    name = build_template.AUTHORIZER
    plain = packaged.plain["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["securityDefinitions"]
    # The name the merge template addresses is the one Chalice generates (else it would add a second one).
    assert set(plain) == {name}
    assert plain[name]["x-amazon-apigateway-authorizer"]["type"] == "token"
    body = packaged.resources["RestAPI"]["Properties"]["DefinitionBody"]
    authorizer = body["securityDefinitions"][name]["x-amazon-apigateway-authorizer"]
    # Every header reaches the function, on every request: a revoked key stops at once.
    assert authorizer["type"] == "request"
    assert authorizer["authorizerResultTtlInSeconds"] == 0
    assert "identitySource" not in authorizer  # else API Gateway answers by itself when it is missing
    function = function_id(name)
    assert function in authorizer["authorizerUri"]["Fn::Sub"]
    assert packaged.resources[function]["Properties"]["Handler"] == f"app.{name}"
    secured = {
        (path, method): operation["security"]
        for path, operations in body["paths"].items()
        for method, operation in operations.items()
        if operation.get("security")
    }
    assert set(secured) == ORDER_ROUTES
    assert all(security == [{name: []}] for security in secured.values())


def test_refusals_are_json_401s_and_a_failing_authorizer_a_503(packaged: Packaged) -> None:
    responses = packaged.resources["RestAPI"]["Properties"]["DefinitionBody"]["x-amazon-apigateway-gateway-responses"]
    assert responses == json.loads((REPO / "infra" / "gateway_responses.json").read_text(encoding="utf-8"))
    assert {kind: response["statusCode"] for kind, response in responses.items()} == {
        "ACCESS_DENIED": 401,
        "UNAUTHORIZED": 401,
        "AUTHORIZER_FAILURE": 503,
    }


def test_an_unknown_gateway_response_fails_the_build(tmp_path: Path) -> None:
    copy_project(tmp_path)
    path = tmp_path / "infra" / "gateway_responses.json"
    responses = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**responses, "ACCESS_DENIEDD": responses["ACCESS_DENIED"]}), encoding="utf-8")
    with pytest.raises(build_template.TemplateError, match="ACCESS_DENIEDD"):
        build_template.build_template("dev", tmp_path)


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


# --- Config, build script, Makefile, container files ---------------------------------------


def test_the_local_stage_sets_no_environment_that_would_override_the_local_stack() -> None:
    # `chalice local --stage local` copies the stage's environment_variables
    # over the process environment before importing app.py: any value here
    # would replace the names and endpoints devstack passes in.
    assert "environment_variables" not in CHALICE_CONFIG
    assert Config(chalice_stage="local", config_from_disk=CHALICE_CONFIG).environment_variables == {}


def test_the_local_stage_cannot_be_deployed() -> None:
    with pytest.raises(build_template.TemplateError, match="local stage"):
        build_template.build_template("local", REPO)


def test_an_unknown_event_source_setting_fails_the_build(tmp_path: Path) -> None:
    copy_project(tmp_path)
    settings = tmp_path / "infra" / "event_sources.json"
    settings.write_text(json.dumps({**EVENT_SOURCES, "place_orders": {"bisect_batch_on_function_error": True}}))
    with pytest.raises(build_template.TemplateError, match="not a setting of a Sqs event source"):
        build_template.build_template("dev", tmp_path)


def test_make_deploy_says_what_is_missing_before_building_anything() -> None:
    env = {**os.environ, "DEPLOY_BUCKET": ""}
    result = subprocess.run(
        ["make", "-s", "deploy", "STAGE=dev"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "set DEPLOY_BUCKET" in result.stderr
    result = subprocess.run(
        ["make", "-s", "deploy-check", "DEPLOY_BUCKET=bucket", "AWS=no-such-aws-cli"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "AWS CLI" in result.stderr


def test_the_bridge_image_runs_the_bridge_on_the_functions_python(packaged: Packaged) -> None:
    dockerfile = (REPO / "feed_bridge" / "Dockerfile").read_text(encoding="utf-8")
    assert 'ENTRYPOINT ["python", "-m", "feed_bridge"]' in dockerfile
    version = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)-", dockerfile, re.MULTILINE)
    assert version is not None
    assert packaged.resources["PlaceOrders"]["Properties"]["Runtime"] == f"python{version[1]}"
    # Its build context is feed_bridge/ alone: whatever it copies must be there.
    for source in re.findall(r"^COPY (\S+) ", dockerfile, re.MULTILINE):
        assert list((REPO / "feed_bridge").glob(source)), source


def test_compose_runs_the_local_stack_against_a_pinned_localstack() -> None:
    from devstack.localstack import SERVICES

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    localstack = services["localstack"]
    image = re.fullmatch(r"\$\{LOCALSTACK_IMAGE:-(.+)\}", localstack["image"])
    assert image is not None
    assert re.fullmatch(r"localstack/localstack:\d+\.\d+\.\d+", image[1]), "pin a release, not latest"
    assert localstack["environment"]["LOCALSTACK_AUTH_TOKEN"] == "${LOCALSTACK_AUTH_TOKEN:-}"
    assert localstack["environment"]["SERVICES"].split(",") == list(SERVICES)
    stack = services["stack"]
    assert stack["environment"]["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"
    assert "make setup" in " ".join(stack["command"]) and "devstack.stack" in " ".join(stack["command"])
    bridge = services["feed-bridge"]
    assert bridge["build"]["context"] == "feed_bridge"
    # The names the local stack provisions with its default prefix.
    for variable, logical_id in (
        ("EXECUTIONS_STREAM_NAME", "ExecutionsStream"),
        ("FEED_CHECKPOINTS_TABLE_NAME", "FeedCheckpointsTable"),
    ):
        value = bridge["environment"][variable].replace("${RESOURCE_PREFIX:-brokerage-local}", "brokerage-local")
        assert value == name_of(logical_id, "brokerage-local")
