"""The deployable stack: `chalice package` merged with infra/, checked offline with no AWS account.

What each function's role may do is checked in test_package_iam.py.
"""

from __future__ import annotations

import dataclasses
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

from tests.tooling.template_support import (
    CHALICE_CONFIG,
    HANDLERS,
    REPO,
    RESOURCES,
    Packaged,
    build_template,
    copy_project,
    defaults,
    event_of,
    function_id,
    getatt,
    name_of,
    referenced_resource,
    resolve_sub,
    stage_environment,
)

pytestmark = pytest.mark.integration

REPORT_BATCH_ITEM_FAILURES = ["ReportBatchItemFailures"]
EVENT_SOURCES = json.loads((REPO / "infra" / "event_sources.json").read_text(encoding="utf-8"))


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
        "ORDERS_DEAD_LETTER_QUEUE_NAME": ("OrdersDeadLetterQueue", f"{prefix}-orders-dlq"),
        "EXECUTIONS_STREAM_NAME": ("ExecutionsStream", f"{prefix}-executions"),
        "EXECUTIONS_TABLE_NAME": ("ExecutionsTable", f"{prefix}-executions"),
        "EXECUTIONS_FAILED_QUEUE_NAME": ("ExecutionsFailedQueue", f"{prefix}-executions-failed"),
        "API_KEYS_TABLE_NAME": ("ApiKeysTable", f"{prefix}-api-keys"),
        "FEED_CHECKPOINTS_TABLE_NAME": ("FeedCheckpointsTable", f"{prefix}-feed-checkpoints"),
        "ORDER_EVENTS_TABLE_NAME": ("OrderEventsTable", f"{prefix}-order-events"),
        "STREAM_CONNECTIONS_TABLE_NAME": ("StreamConnectionsTable", f"{prefix}-stream-connections"),
        "ORDER_EVENTS_FAILED_QUEUE_NAME": ("OrderEventsFailedQueue", f"{prefix}-order-events-failed"),
    }
    for handler in HANDLERS:
        variables = packaged.resources[function_id(handler)]["Properties"]["Environment"]["Variables"]
        for variable, (logical_id, name) in names.items():
            assert variables[variable] == name_of(logical_id, prefix) == name, variable
        assert variables["EXCHANGE_URL"] == {"Ref": "ExchangeUrl"}
        # The stream the mapping reads, not the placeholder app.py's decorator was packaged with.
        assert variables["ORDERS_TABLE_STREAM_ARN"] == getatt("OrdersTable", "StreamArn")


def test_the_venue_url_is_a_parameter_defaulting_to_the_stages_own(packaged: Packaged) -> None:
    """`make test-deploy` points the deployed functions at the simulator through it, not by editing them."""
    parameter = packaged.template["Parameters"]["ExchangeUrl"]
    assert parameter["Default"] == stage_environment(packaged.stage)["EXCHANGE_URL"]
    assert re.fullmatch(parameter["AllowedPattern"], "http://127.0.0.1:8001")
    assert not re.fullmatch(parameter["AllowedPattern"], "ftp://venue.example/")


def test_every_resource_name_the_app_reads_is_set_for_the_stage(packaged: Packaged) -> None:
    from chalicelib.config import setting_names

    wanted = {name.upper() for name in setting_names() if name.endswith("_name")}
    assert wanted <= set(stage_environment(packaged.stage))


# --- Event source mappings ------------------------------------------------------------


def test_the_event_source_table_of_build_template_matches_what_chalice_generates(packaged: Packaged) -> None:
    # The merge template addresses each mapping by the event name Chalice
    # generates; a wrong name would add a second, broken event instead.
    generated = {
        handler: name
        for handler in HANDLERS
        for name, event in packaged.plain["Resources"][function_id(handler)]["Properties"].get("Events", {}).items()
        if event["Type"] in ("SQS", "Kinesis", "DynamoDB")
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


def test_the_sqs_mapping_deploys_the_maximum_concurrency_the_local_runner_scales_to(packaged: Packaged) -> None:
    # Chalice writes the decorator's value when it packages (not the stage's
    # environment), so the template holds what the app built in this process holds.
    from chalice.app import SQSEventConfig

    from app import app as production_app
    from devstack.runner.sqs import SqsSource

    (config,) = [source for source in production_app.event_sources if source.name == "place_orders"]
    assert isinstance(config, SQSEventConfig)
    maximum = SqsSource.from_config(config).maximum_concurrency
    assert maximum is not None and 2 <= maximum <= 1000  # Lambda's bounds for ScalingConfig
    _, event = event_of(packaged.template, "place_orders")
    assert event["Properties"]["ScalingConfig"] == {"MaximumConcurrency": maximum}
    (mapping,) = [
        mapping
        for mapping in packaged.expanded["Resources"].values()
        if mapping["Type"] == "AWS::Lambda::EventSourceMapping" and "ScalingConfig" in mapping["Properties"]
    ]
    assert mapping["Properties"]["ScalingConfig"] == {"MaximumConcurrency": maximum}


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


def test_the_orders_table_stream_mapping_reads_the_tables_stream_with_what_chalice_cannot_express(
    packaged: Packaged,
) -> None:
    from chalicelib.config import Settings

    name, event = event_of(packaged.template, "publish_order_events")
    assert (name, event["Type"]) == ("PublishOrderEventsDynamodbEventSource", "DynamoDB")
    properties = event["Properties"]
    # By reference: the stream's ARN ends in a label its creation decides,
    # which no setting can know, and the mapping then waits for the table.
    assert properties["Stream"] == {"Fn::Sub": "${OrdersTable.StreamArn}"}
    assert referenced_resource(properties["Stream"], packaged.template) == "OrdersTable"
    assert RESOURCES["Outputs"]["OrdersTableStreamArn"]["Value"] == getatt("OrdersTable", "StreamArn")
    # Chalice's own value is plain text (the packaging process's setting): the override replaces it whole.
    _, generated = event_of(packaged.plain, "publish_order_events")
    assert isinstance(generated["Properties"]["Stream"], str)
    # Events are derived from what changed: both images.
    stream = packaged.resources["OrdersTable"]["Properties"]["StreamSpecification"]
    assert stream == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    # Every change from the oldest the stream keeps; batches as app.py's settings say.
    assert properties["StartingPosition"] == "TRIM_HORIZON"
    assert properties["BatchSize"] == Settings().order_events_batch_size
    settings = EVENT_SOURCES["publish_order_events"]
    assert properties["FunctionResponseTypes"] == settings["function_response_types"] == REPORT_BATCH_ITEM_FAILURES
    assert properties["BisectBatchOnFunctionError"] is settings["bisect_batch_on_function_error"] is True
    # Retried until the record is a day old: the on-failure queue gets only a pointer into a stream that
    # keeps it 24 h, so a record sent there for a passing storage fault would never have its events logged
    # (the consumer sets aside records no retry can help itself, chalicelib/entrypoints/order_stream.py).
    assert properties["MaximumRetryAttempts"] == settings["maximum_retry_attempts"] == -1
    # A DynamoDB stream keeps records 24 h: a record older than that is gone anyway.
    assert 60 <= properties["MaximumRecordAgeInSeconds"] == settings["maximum_record_age_in_seconds"] <= 86400
    assert settings["on_failure_destination_output"] == "OrderEventsFailedQueueArn"
    assert properties["DestinationConfig"] == {"OnFailure": {"Destination": getatt("OrderEventsFailedQueue")}}


def test_a_stream_mapping_without_a_stream_on_its_table_fails_the_build(tmp_path: Path) -> None:
    copy_project(tmp_path)
    path = tmp_path / "infra" / "resources.yaml"
    resources = yaml.safe_load(path.read_text(encoding="utf-8"))
    del resources["Resources"]["OrdersTable"]["Properties"]["StreamSpecification"]
    path.write_text(yaml.safe_dump(resources), encoding="utf-8")
    with pytest.raises(build_template.TemplateError, match="StreamSpecification"):
        build_template.build_template("dev", tmp_path)


# --- The reconciler's schedule ----------------------------------------------------------------


def _setting(stage: str, name: str) -> int:
    """A setting as the stage's functions read it: the stage's environment_variables, else the default."""
    from chalicelib.config import Settings

    configured = stage_environment(stage).get(name.upper())
    if configured is not None:
        return int(getattr(Settings(**{name: configured}), name))
    (default,) = [field.default for field in dataclasses.fields(Settings) if field.name == name]
    assert isinstance(default, int)
    return default


def test_the_reconciler_runs_at_the_stages_interval_and_ends_before_its_next_run(packaged: Packaged) -> None:
    # Chalice writes the rate app.py's decorator holds when it packages, with
    # the stage's environment_variables applied to the process that imports
    # app.py: RECONCILE_INTERVAL_MIN in the stage's config (default 5) decides it.
    interval = _setting(packaged.stage, "reconcile_interval_min")
    name, event = event_of(packaged.template, "reconcile_orders")
    assert (name, event["Type"]) == ("ReconcileOrdersEvent", "Schedule")
    rate = re.fullmatch(r"rate\((\d+) minutes?\)", event["Properties"]["Schedule"])
    assert rate is not None and int(rate[1]) == interval, event
    # Two runs at once would start from the same cursor and check the same
    # orders twice: a run must end (time out at worst) before the next begins.
    assert packaged.resources["ReconcileOrders"]["Properties"]["Timeout"] < 60 * interval


def test_revoked_keys_stream_connections_are_closed_every_minute_by_one_run_at_a_time(packaged: Packaged) -> None:
    name, event = event_of(packaged.template, "close_revoked_stream_connections")
    assert (name, event["Type"]) == ("CloseRevokedStreamConnectionsEvent", "Schedule")
    # The contract: a revoked key's connections are closed within 60 s.
    assert event["Properties"]["Schedule"] == "rate(1 minute)"
    properties = packaged.resources["CloseRevokedStreamConnections"]["Properties"]
    assert properties["Timeout"] < 60
    assert properties["ReservedConcurrentExecutions"] == 1


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


# --- Logs, alarms, API (the feed bridge's task and role: test_package_iam.py) ----------------


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


def test_a_corrected_order_raises_an_alarm_on_the_metric_the_code_writes(packaged: Packaged) -> None:
    """The alarm watches the metric exactly as Powertools writes it: namespace and every dimension."""
    from chalicelib import observability

    sources = [path.read_text(encoding="utf-8") for path in sorted((REPO / "chalicelib").rglob("*.py"))]
    assert any('"OrdersCorrected"' in source for source in sources), "no code counts OrdersCorrected"
    observability.count("OrdersCorrected")
    try:
        written: dict[str, Any] = dict(observability.metrics.serialize_metric_set())
    finally:
        observability.metrics.clear_metrics()
    (declaration,) = written["_aws"]["CloudWatchMetrics"]
    (dimension_names,) = declaration["Dimensions"]
    dimensions = {name: written[name] for name in dimension_names}
    alarm = _find_alarm(packaged.template, declaration["Namespace"], "OrdersCorrected", dimensions["service"])
    # CloudWatch matches a metric by all its dimensions: one missing or extra and the alarm never sees a datum.
    assert {dimension["Name"]: dimension["Value"] for dimension in alarm["Dimensions"]} == dimensions
    assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"]) == ("Sum", "GreaterThanThreshold", 0)
    assert alarm["TreatMissingData"] == "notBreaching"


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
    ("/orders/{order_id}", "patch"),  # replace
    ("/orders/{order_id}/executions", "get"),
    ("/orders", "delete"),  # cancel all
    ("/orders/by-client-order-id/{client_order_id}", "get"),
    # The account's order events, and a token to connect to their stream.
    ("/events", "get"),
    ("/stream/tokens", "post"),
}


def test_every_order_route_has_the_authorizer_as_an_uncached_request_authorizer(packaged: Packaged) -> None:
    name = build_template.AUTHORIZER
    plain = packaged.plain["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["securityDefinitions"]
    # The name the merge template addresses is the one Chalice generates (else it would add a second one);
    # api_key: Chalice's for routes that require an API key (the usage plans', see test_rate_limit_template.py).
    assert set(plain) == {name, "api_key"}
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
    assert all(security == [{"api_key": []}, {name: []}] for security in secured.values())


def test_refusals_are_json_401s_and_a_failing_authorizer_a_503(packaged: Packaged) -> None:
    responses = packaged.resources["RestAPI"]["Properties"]["DefinitionBody"]["x-amazon-apigateway-gateway-responses"]
    assert responses == json.loads((REPO / "infra" / "gateway_responses.json").read_text(encoding="utf-8"))
    assert {kind: response["statusCode"] for kind, response in responses.items()} == {
        "ACCESS_DENIED": 401,
        "UNAUTHORIZED": 401,
        "AUTHORIZER_FAILURE": 503,
        # The usage plans' (test_rate_limit_template.py).
        "THROTTLED": 429,
        "QUOTA_EXCEEDED": 429,
    }


def test_an_unknown_gateway_response_fails_the_build(tmp_path: Path) -> None:
    copy_project(tmp_path)
    path = tmp_path / "infra" / "gateway_responses.json"
    responses = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**responses, "ACCESS_DENIEDD": responses["ACCESS_DENIED"]}), encoding="utf-8")
    with pytest.raises(build_template.TemplateError, match="ACCESS_DENIEDD"):
        build_template.build_template("dev", tmp_path)


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
