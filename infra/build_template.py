"""Builds the template `chalice package --merge-template` merges into Chalice's output, for one stage."""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import alarm_template
import rate_limit_template
import stream_template
import yaml
from chalice.config import Config
from chalice.utils import to_cfn_resource_name

ROOT = Path(__file__).resolve().parent.parent
RESOURCES_PATH = Path("infra") / "resources.yaml"
OPERATIONS_PATH = Path("infra") / "operations.yaml"
EVENT_SOURCES_PATH = Path("infra") / "event_sources.json"
GATEWAY_RESPONSES_PATH = Path("infra") / "gateway_responses.json"
CHALICE_CONFIG_PATH = Path(".chalice") / "config.json"

Template = dict[str, Any]

# Event-driven handlers and the kind of their Chalice event source, which
# app.py's decorators decide; Chalice names the SAM event
# `<Function><Kind>EventSource`. tests/tooling/test_package.py checks this
# table against what `chalice package` generates.
EVENT_SOURCE_KINDS = {"place_orders": "Sqs", "apply_executions": "Kinesis", "publish_order_events": "DynamoDB"}
# The setting app.py names each handler's queue or stream by
# (`queue=settings.orders_queue_name`); Chalice writes its value into an ARN.
# tests/tooling/test_package.py checks that ARN names the same resource.
# A DynamoDB stream's ARN holds a label only its creation decides: app.py's
# ORDERS_TABLE_STREAM_ARN cannot name it, so the table named here is the source.
EVENT_SOURCE_NAME_VARIABLES = {
    "place_orders": "ORDERS_QUEUE_NAME",
    "apply_executions": "EXECUTIONS_STREAM_NAME",
    "publish_order_events": "ORDERS_TABLE_NAME",
}
# Per kind: the SAM event property that names the source, its resource type, and the attribute that is its ARN.
_EVENT_SOURCE_PROPERTIES = {
    "Sqs": ("Queue", "AWS::SQS::Queue", "Arn"),
    "Kinesis": ("Stream", "AWS::Kinesis::Stream", "Arn"),
    "DynamoDB": ("Stream", "AWS::DynamoDB::Table", "StreamArn"),
}
# Every function gets the orders table's stream ARN as ORDERS_TABLE_STREAM_ARN:
# the setting app.py's decorator reads is then the stream the mapping reads.
STREAM_ARN_VARIABLE = "ORDERS_TABLE_STREAM_ARN"
# app.py's `@app.authorizer` function, which Chalice names the API's
# authorizer after (securityDefinitions); tests/tooling/test_package.py
# checks this against what `chalice package` generates.
AUTHORIZER = "api_key_authorizer"
# Gateway responses infra/gateway_responses.json may replace: the ones an
# authorizer leads to, and the usage plans' 429s (the accounts' rate limits).
# devstack/api_gateway.py emulates these same ones.
GATEWAY_RESPONSE_TYPES = frozenset(
    {"ACCESS_DENIED", "UNAUTHORIZED", "AUTHORIZER_FAILURE", "THROTTLED", "QUOTA_EXCEEDED"}
)
_GATEWAY_RESPONSE_KEYS = frozenset({"statusCode", "responseParameters", "responseTemplates"})
# The version of the API definition Chalice writes (`"swagger": "2.0"`). SAM
# adds a second stage named `Stage` to a RestApi without an OpenApiVersion;
# any value stops that, and the definition's own version keeps SAM from
# converting the body to OpenAPI 3.
API_OPENAPI_VERSION = "2.0"
# The API's function: the API is traced when its function is (`xray`).
API_HANDLER = "api_handler"
# The orders queue's consumer: its timeout sets the queue's visibility timeout.
PLACEMENT_HANDLER = "place_orders"
# AWS: a queue feeding a Lambda function keeps each message invisible for at
# least 6x the function's timeout, or a retried invocation may still hold a
# message when it becomes visible again and is delivered a second time.
VISIBILITY_TIMEOUT_FACTOR = 6
# The application setting that must equal the orders queue's maxReceiveCount.
MAX_ATTEMPTS_VARIABLE = "PLACEMENT_MAX_ATTEMPTS"
# The venue's order entry URL: the stage's value is the ExchangeUrl
# parameter's default, so a deploy can point the functions at another venue
# (`make test-deploy`: the simulator on 127.0.0.1) without editing them.
EXCHANGE_URL_VARIABLE = "EXCHANGE_URL"
LAMBDA_FUNCTION_NAME_MAX = 64
# The placement mapping's ScalingConfig.MaximumConcurrency when the stage sets
# no PLACEMENT_MAX_CONCURRENCY (chalicelib/config.py's default; a test holds
# them equal). place_orders' reserved concurrency must not be below it, or
# Lambda throttles the mapping's batches back onto the queue.
PLACEMENT_MAX_CONCURRENCY_VARIABLE = "PLACEMENT_MAX_CONCURRENCY"
DEFAULT_PLACEMENT_MAX_CONCURRENCY = 50
# AWS keeps at least 100 of an account's concurrency unreserved; 1,000 is the
# default account limit. Reservations beyond 900 cannot deploy there.
ACCOUNT_CONCURRENCY = 1000
UNRESERVED_CONCURRENCY_MINIMUM = 100
# The data key's policy (resources.yaml) names the roles that may use it.
DATA_KEY = "DataKey"
DATA_KEY_USERS_STATEMENT = "StackRolesUseTheKeyThroughTheirServices"
ROLE_ARN_PREFIX = "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/"
# Parameters whose defaults build_template() derives from the stage's config.
STAGE_PARAMETERS = (
    "ResourcePrefix",
    "PlacementMaxAttempts",
    "PlacementVisibilityTimeoutSeconds",
    "LogRetentionInDays",
    "ExchangeUrl",
)

# infra/event_sources.json key -> (event source property, kinds that have it).
# Anything else in the file is an error: a misspelt key would otherwise deploy
# a mapping without the setting and nobody would notice until it mattered.
_STREAMS = frozenset({"Kinesis", "DynamoDB"})
_EXTRAS: Mapping[str, tuple[str, frozenset[str]]] = {
    "function_response_types": ("FunctionResponseTypes", frozenset({"Sqs"}) | _STREAMS),
    "bisect_batch_on_function_error": ("BisectBatchOnFunctionError", _STREAMS),
    "maximum_retry_attempts": ("MaximumRetryAttempts", _STREAMS),
    "maximum_record_age_in_seconds": ("MaximumRecordAgeInSeconds", _STREAMS),
}
_DESTINATION_KEY = "on_failure_destination_output"

# Which property names each kind of resource in resources.yaml.
_NAME_PROPERTY = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::Kinesis::Stream": "Name",
    "AWS::SecretsManager::Secret": "Name",
}
_PREFIX_PLACEHOLDER = "${ResourcePrefix}"


class TemplateError(Exception):
    """The inputs are incomplete or disagree; the message says which and where."""


def _load_yaml(path: Path) -> Template:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise TemplateError(f"{path}: expected a mapping at the top level")
    return loaded


def _load_json(path: Path) -> dict[str, Any]:
    loaded = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise TemplateError(f"{path}: expected a JSON object")
    return loaded


def function_logical_ids(handler: str) -> tuple[str, str, str]:
    """(function, role, log group) logical ids Chalice gives a handler's resources.

    Chalice names the API's function APIHandler but its role and log group
    after the handler name (ApiHandlerRole, ApiHandlerLogGroup).
    """
    function = "APIHandler" if handler == "api_handler" else to_cfn_resource_name(handler)
    return function, to_cfn_resource_name(f"{handler}_role"), to_cfn_resource_name(f"{handler}-log-group")


def function_name_suffix(handler: str) -> str:
    return handler.replace("_", "-")


def _output_name(variable: str) -> str:
    """ORDERS_TABLE_NAME -> OrdersTableName, the Output of resources.yaml that gives its value."""
    return "".join(word.capitalize() for word in variable.split("_"))


def _named_resource(resources: Template, output: str) -> tuple[str, str]:
    """(logical id, name pattern) of the resource whose name an Output of resources.yaml returns."""
    value = resources["Outputs"][output]["Value"]
    if "Ref" in value:
        logical_id = str(value["Ref"])
    elif "Fn::GetAtt" in value and value["Fn::GetAtt"][1] in _NAME_PROPERTY.values():
        logical_id = str(value["Fn::GetAtt"][0])
    elif "Fn::Sub" in value:
        # A secret's Ref is its ARN and it has no name attribute: its Output
        # spells out the same Fn::Sub as the secret's Name.
        same_name = [
            candidate
            for candidate, resource in resources["Resources"].items()
            if resource.get("Properties", {}).get(_NAME_PROPERTY.get(resource["Type"], ""), {}) == value
        ]
        if len(same_name) != 1:
            raise TemplateError(f"resources.yaml: Output {output} spells out no one resource's name")
        logical_id = same_name[0]
    else:
        raise TemplateError(f"resources.yaml: Output {output} does not return a resource's name")
    resource = resources["Resources"][logical_id]
    name = resource.get("Properties", {}).get(_NAME_PROPERTY.get(resource["Type"], ""), {})
    pattern = name.get("Fn::Sub") if isinstance(name, dict) else None
    if not isinstance(pattern, str) or pattern.count("${") != 1 or _PREFIX_PLACEHOLDER not in pattern:
        raise TemplateError(f"resources.yaml: {logical_id} is not named by a Fn::Sub of ${{ResourcePrefix}} alone")
    return logical_id, pattern


def resource_prefix(resources: Template, environment: Mapping[str, str], stage: str) -> str:
    """The ResourcePrefix the stage's resource names in .chalice/config.json were made with.

    Every environment variable that names a resource of resources.yaml must
    use one and the same prefix: the functions find their resources by these
    names, and the stack creates them from the prefix.
    """
    prefixes: dict[str, str] = {}
    for variable, value in environment.items():
        output = _output_name(variable)
        if output not in resources["Outputs"]:
            continue
        logical_id, pattern = _named_resource(resources, output)
        before, after = pattern.split(_PREFIX_PLACEHOLDER)
        match = re.fullmatch(f"{re.escape(before)}(?P<prefix>.+){re.escape(after)}", value)
        if match is None:
            raise TemplateError(f"stage {stage}: {variable}={value!r} does not fit {logical_id}'s name {pattern!r}")
        prefixes[variable] = match["prefix"]
    if not prefixes:
        raise TemplateError(
            f"stage {stage} names no resources in its environment_variables in .chalice/config.json "
            "(the local stage is for `chalice local` only and cannot be deployed)"
        )
    if len(set(prefixes.values())) > 1:
        raise TemplateError(f"stage {stage}: resource names use different prefixes: {prefixes}")
    prefix = next(iter(prefixes.values()))
    spec = resources["Parameters"]["ResourcePrefix"]
    if not re.fullmatch(spec["AllowedPattern"], prefix) or not spec["MinLength"] <= len(prefix) <= spec["MaxLength"]:
        raise TemplateError(f"stage {stage}: prefix {prefix!r} is not a valid ResourcePrefix")
    return prefix


def _stage_config(chalice_config: dict[str, Any], stage: str, handler: str) -> Config:
    # Chalice's own lookup (stage, function and top-level settings in its
    # order), so the values here are the ones `chalice package` uses.
    return Config(chalice_stage=stage, function_name=handler, config_from_disk=chalice_config)


def _integer_setting(config: Config, name: str, stage: str, handler: str) -> int:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TemplateError(f"stage {stage}: {handler} needs an integer {name} in .chalice/config.json")
    return value


def _bounded_default(parameter: dict[str, Any], name: str, value: int) -> None:
    """Make value the parameter's default, if resources.yaml's bounds allow it."""
    if not float(parameter.get("MinValue", value)) <= value <= float(parameter.get("MaxValue", value)):
        raise TemplateError(f"{name}={value} is outside the parameter's range in resources.yaml")
    parameter["Default"] = value


def _event_source_properties(handler: str, extras: Mapping[str, Any], kind: str, resources: Template) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for key, value in extras.items():
        if key == _DESTINATION_KEY and kind in _STREAMS:
            output = resources["Outputs"].get(value)
            arn = None if output is None else output["Value"]
            if not (isinstance(arn, dict) and "Fn::GetAtt" in arn and arn["Fn::GetAtt"][1] == "Arn"):
                raise TemplateError(f"event_sources.json: {handler}: {value!r} is no Output of a resource's Arn")
            # The resource's own Arn, not the Output: a template cannot
            # reference its own Outputs, and GetAtt orders the creation.
            properties["DestinationConfig"] = {"OnFailure": {"Destination": copy.deepcopy(arn)}}
        elif key in _EXTRAS and kind in _EXTRAS[key][1]:
            properties[_EXTRAS[key][0]] = copy.deepcopy(value)
        else:
            raise TemplateError(f"event_sources.json: {handler}: {key!r} is not a setting of a {kind} event source")
    return properties


def _event_source_reference(handler: str, kind: str, resources: Template, environment: Mapping[str, str]) -> Template:
    """The property naming a mapping's source, as a reference to the resource itself.

    Chalice names the queue or stream by an ARN it builds from the name (a
    `Fn::Sub` of literal text), which references nothing: CloudFormation may
    then create the mapping before its source exists, and Lambda refuses it.
    A reference makes the mapping wait for the resource. The override must be
    a `Fn::Sub` too, as Chalice's value is (Chalice's merge is a deep merge,
    and a `Fn::GetAtt` beside its `Fn::Sub` would keep both); in a `Fn::Sub`,
    `${Queue.Arn}` is the same value and the same dependency as a GetAtt.
    """
    variable = EVENT_SOURCE_NAME_VARIABLES[handler]
    if variable not in environment:
        raise TemplateError(f"{CHALICE_CONFIG_PATH}: {handler}'s source needs {variable} in the stage's environment")
    # resource_prefix() has checked that the value is this resource's name.
    logical_id, _ = _named_resource(resources, _output_name(variable))
    source_property, resource_type, attribute = _EVENT_SOURCE_PROPERTIES[kind]
    source = resources["Resources"][logical_id]
    if source["Type"] != resource_type:
        raise TemplateError(f"resources.yaml: {logical_id}, {handler}'s source, is not a {resource_type}")
    if kind == "DynamoDB" and "StreamSpecification" not in source["Properties"]:
        raise TemplateError(f"resources.yaml: {logical_id}, {handler}'s source, has no StreamSpecification")
    return {source_property: {"Fn::Sub": f"${{{logical_id}.{attribute}}}"}}


def _gateway_responses(responses: dict[str, Any]) -> dict[str, Any]:
    """infra/gateway_responses.json, checked: only responses an authorizer causes, JSON bodies, static headers."""
    for response_type, response in responses.items():
        where = f"{GATEWAY_RESPONSES_PATH}: {response_type}"
        if response_type not in GATEWAY_RESPONSE_TYPES:
            raise TemplateError(f"{where}: not one of {', '.join(sorted(GATEWAY_RESPONSE_TYPES))}")
        if not isinstance(response, dict) or set(response) - _GATEWAY_RESPONSE_KEYS:
            raise TemplateError(f"{where}: only {', '.join(sorted(_GATEWAY_RESPONSE_KEYS))} may be set")
        status = response.get("statusCode")
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise TemplateError(f"{where}: statusCode must be a 4xx or 5xx number")
        if set(response.get("responseTemplates", {})) != {"application/json"}:
            raise TemplateError(f"{where}: needs exactly one responseTemplates entry, application/json")
        for name, value in response.get("responseParameters", {}).items():
            if not name.startswith("gatewayresponse.header.") or not re.fullmatch(r"'[^']*'", str(value)):
                raise TemplateError(f"{where}: {name} must be a gatewayresponse.header. with a quoted static value")
    return responses


def _api_authorization(gateway_responses: dict[str, Any]) -> dict[str, Any]:
    """Overrides of Chalice's API: its authorizer as a REQUEST authorizer without caching, and our gateway responses.

    Chalice declares its built-in authorizer as a TOKEN authorizer on the
    Authorization header. API Gateway would then pass the function that one
    header (no x-api-key), answer a request without it by itself, and cache
    every answer for authorizerResultTtlInSeconds (300 s unless set), so a
    revoked key would go on working that long. A REQUEST authorizer gets every
    header; without caching (TTL 0) it needs no identity source, so API
    Gateway calls it on every request, with a key or without, and a
    revocation counts from the next request. The function takes both kinds of
    event (chalicelib/entrypoints/auth.py).

    The function answers a missing or bad key with a Deny policy whose
    context holds the message; the ACCESS_DENIED gateway response (403 by
    default) turns that into a 401 with the message
    (`$context.authorizer.message`). AUTHORIZER_FAILURE, the function failed
    (e.g. the keys table unreachable), is a 503 instead of a bare 500.
    """
    authorizer = {"type": "request", "authorizerResultTtlInSeconds": 0}
    return {
        "Properties": {
            "DefinitionBody": {
                "securityDefinitions": {AUTHORIZER: {"x-amazon-apigateway-authorizer": authorizer}},
                # Usage plans (the accounts' rate limits) know a request by the API key the
                # authorizer returns (usageIdentifierKey), never by a header the client sends.
                "x-amazon-apigateway-api-key-source": "AUTHORIZER",
                # In the API definition, not AWS::ApiGateway::GatewayResponse
                # resources: a change here then changes the definition and SAM
                # deploys the stage again; a separate resource would wait for
                # the next deployment to take effect.
                "x-amazon-apigateway-gateway-responses": copy.deepcopy(gateway_responses),
            }
        }
    }


def _deep_merge(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _merge_sections(target: Template, source: Template, origin: str) -> None:
    for section in ("Parameters", "Conditions", "Rules", "Resources", "Outputs"):
        for key, value in source.get(section, {}).items():
            if key in target.setdefault(section, {}):
                raise TemplateError(f"{origin}: {section}.{key} is defined twice")
            target[section][key] = copy.deepcopy(value)


def _function_resources(handler: str, prefix: str, handlers: Sequence[str], stage_name: str) -> dict[str, Any]:
    """Overrides of a handler's function and log group, and its alarms."""
    function_id, role_id, log_group_id = function_logical_ids(handler)
    suffix = function_name_suffix(handler)
    if len(f"{prefix}-{suffix}") > LAMBDA_FUNCTION_NAME_MAX:
        raise TemplateError(f"function name {prefix}-{suffix} is longer than {LAMBDA_FUNCTION_NAME_MAX} characters")
    # A fixed function name lets the log group be named without referencing
    # the function. Chalice's group references the function (the API's by a
    # wrong logical id, ${ApiHandler}, which fails to deploy), so the role
    # could not reference the group; now it does, and the group exists (with
    # its retention) before the function can write a line.
    return {
        function_id: {
            "Properties": {
                "FunctionName": {"Fn::Sub": f"${{ResourcePrefix}}-{suffix}"},
                "Environment": {
                    "Variables": {
                        MAX_ATTEMPTS_VARIABLE: {"Ref": "PlacementMaxAttempts"},
                        EXCHANGE_URL_VARIABLE: {"Ref": "ExchangeUrl"},
                        STREAM_ARN_VARIABLE: {"Fn::GetAtt": ["OrdersTable", "StreamArn"]},
                        **stream_template.management_environment(handler, handlers, stage_name),
                    }
                },
            }
        },
        log_group_id: {"Properties": {"LogGroupName": {"Fn::Sub": f"/aws/lambda/${{ResourcePrefix}}-{suffix}"}}},
        # Named like the function: the data key's policy names the roles that
        # may use it (a reference would be a cycle: role -> table -> key).
        role_id: {"Properties": {"RoleName": {"Fn::Sub": f"${{ResourcePrefix}}-{suffix}"}}},
        **alarm_template.function_alarms(handler, function_id, function_name_suffix(handler)),
    }


def _set_stage_parameters(
    parameters: dict[str, Any], chalice_config: dict[str, Any], stage: str, handlers: Sequence[str], prefix: str
) -> None:
    environment = _stage_config(chalice_config, stage, PLACEMENT_HANDLER).environment_variables

    # The stage's names in .chalice/config.json are what the functions use;
    # another prefix at deploy time would create resources they never find.
    parameters["ResourcePrefix"]["Default"] = prefix
    parameters["ResourcePrefix"]["AllowedValues"] = [prefix]

    # One value for both: the stage's PLACEMENT_MAX_ATTEMPTS is the default of
    # PlacementMaxAttempts, which the queue's maxReceiveCount and every
    # function's PLACEMENT_MAX_ATTEMPTS reference, so an override changes both.
    exchange_url = environment.get(EXCHANGE_URL_VARIABLE, "")
    if not re.fullmatch(parameters["ExchangeUrl"]["AllowedPattern"], exchange_url):
        raise TemplateError(
            f"stage {stage}: {EXCHANGE_URL_VARIABLE} in .chalice/config.json must be an https:// URL "
            "(http:// only to a loopback host)"
        )
    parameters["ExchangeUrl"]["Default"] = exchange_url

    raw_attempts = environment.get(MAX_ATTEMPTS_VARIABLE, "")
    if not raw_attempts.isdigit():
        raise TemplateError(f"stage {stage}: {MAX_ATTEMPTS_VARIABLE} must be set to a number in .chalice/config.json")
    _bounded_default(parameters["PlacementMaxAttempts"], "PlacementMaxAttempts", int(raw_attempts))

    placement = _stage_config(chalice_config, stage, PLACEMENT_HANDLER)
    timeout = _integer_setting(placement, "lambda_timeout", stage, PLACEMENT_HANDLER)
    visibility = parameters["PlacementVisibilityTimeoutSeconds"]
    _bounded_default(visibility, "PlacementVisibilityTimeoutSeconds", VISIBILITY_TIMEOUT_FACTOR * timeout)
    # CloudFormation then refuses a deploy-time override below 6x the timeout.
    visibility["MinValue"] = visibility["Default"]

    # Without a retention Chalice creates no log group and Lambda's own keeps
    # logs forever. The bridge's logs are kept as long as the functions'.
    retention = max(
        _integer_setting(_stage_config(chalice_config, stage, handler), "log_retention_in_days", stage, handler)
        for handler in handlers
    )
    if retention not in parameters["LogRetentionInDays"]["AllowedValues"]:
        raise TemplateError(f"stage {stage}: log_retention_in_days {retention} is not a CloudWatch Logs retention")
    parameters["LogRetentionInDays"]["Default"] = retention


def build_template(stage: str, root: Path = ROOT) -> Template:
    """The merge template of one stage of .chalice/config.json."""
    resources = _load_yaml(root / RESOURCES_PATH)
    operations = _load_yaml(root / OPERATIONS_PATH)
    event_sources = _load_json(root / EVENT_SOURCES_PATH)
    gateway_responses = _gateway_responses(_load_json(root / GATEWAY_RESPONSES_PATH))
    chalice_config = _load_json(root / CHALICE_CONFIG_PATH)
    if stage not in chalice_config.get("stages", {}):
        raise TemplateError(f"no stage {stage!r} in {CHALICE_CONFIG_PATH}")
    handlers = list(chalice_config.get("lambda_functions", {}))
    if PLACEMENT_HANDLER not in handlers:
        raise TemplateError(f"{CHALICE_CONFIG_PATH}: lambda_functions must list every handler, {PLACEMENT_HANDLER} too")
    if AUTHORIZER not in handlers:
        raise TemplateError(f"{CHALICE_CONFIG_PATH}: lambda_functions must list every handler, {AUTHORIZER} too")
    environment = _stage_config(chalice_config, stage, PLACEMENT_HANDLER).environment_variables
    prefix = resource_prefix(resources, environment, stage)
    # The API Gateway stage Chalice deploys both APIs to.
    stage_name = str(_stage_config(chalice_config, stage, API_HANDLER).api_gateway_stage)

    template: Template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": (
            f"Brokerage order backend, stage {stage}: API and functions (Chalice), tables, queues, stream, "
            "alarms, feed bridge."
        ),
    }
    _merge_sections(template, resources, str(RESOURCES_PATH))
    _merge_sections(template, operations, str(OPERATIONS_PATH))
    _set_stage_parameters(template["Parameters"], chalice_config, stage, handlers, prefix)
    for handler in handlers:
        # Merged, not replaced: operations.yaml may add to a function (lint exceptions).
        _deep_merge(template["Resources"], _function_resources(handler, prefix, handlers, stage_name))
    try:
        fallback = rate_limit_template.fallback_usage_key_environment(
            template["Resources"], function_logical_ids(AUTHORIZER)[0]
        )
    except ValueError as exc:
        raise TemplateError(f"{OPERATIONS_PATH}: {exc}") from exc
    _deep_merge(template["Resources"], fallback)
    _deep_merge(template["Resources"].setdefault("RestAPI", {}), _api_authorization(gateway_responses))
    _deep_merge(template["Resources"]["RestAPI"], _api_stage(chalice_config, stage))
    _set_event_sources(template, event_sources, resources, environment, handlers)
    role_ids = {handler: function_logical_ids(handler)[1] for handler in handlers}
    for section, overrides in stream_template.websocket_overrides(handlers, role_ids, stage_name).items():
        _deep_merge(template.setdefault(section, {}), overrides)
    _check_reserved_concurrency(chalice_config, stage, handlers, environment)
    _check_data_key_users(template)
    return template


def _check_reserved_concurrency(
    chalice_config: dict[str, Any], stage: str, handlers: Sequence[str], environment: Mapping[str, str]
) -> None:
    """Every function reserves its concurrency (none can starve another), within what an account can reserve."""
    reserved = {
        handler: _integer_setting(_stage_config(chalice_config, stage, handler), "reserved_concurrency", stage, handler)
        for handler in handlers
    }
    if min(reserved.values()) < 1:
        raise TemplateError(f"stage {stage}: a reserved_concurrency below 1 stops a function: {reserved}")
    if sum(reserved.values()) > ACCOUNT_CONCURRENCY - UNRESERVED_CONCURRENCY_MINIMUM:
        raise TemplateError(
            f"stage {stage}: reserved concurrency {sum(reserved.values())} leaves less than "
            f"{UNRESERVED_CONCURRENCY_MINIMUM} of an account's default {ACCOUNT_CONCURRENCY} unreserved"
        )
    mapping = int(environment.get(PLACEMENT_MAX_CONCURRENCY_VARIABLE, DEFAULT_PLACEMENT_MAX_CONCURRENCY))
    if reserved[PLACEMENT_HANDLER] < mapping:
        raise TemplateError(
            f"stage {stage}: {PLACEMENT_HANDLER}'s reserved_concurrency {reserved[PLACEMENT_HANDLER]} is below "
            f"its queue mapping's maximum concurrency {mapping}: Lambda would throttle the mapping's batches"
        )


def _check_data_key_users(template: Template) -> None:
    """The data key's policy names exactly the stack's roles that use it: the functions', the bridge's, the operator's.

    Every role with a RoleName but the bridge's execution role (ECS's own,
    which pulls the image and writes logs, never data).
    """
    roles = {
        logical_id: resource["Properties"]["RoleName"]
        for logical_id, resource in template["Resources"].items()
        if resource.get("Type", "AWS::IAM::Role") == "AWS::IAM::Role"
        and isinstance(resource.get("Properties", {}).get("RoleName"), dict)
        and logical_id != "FeedBridgeExecutionRole"
    }
    wanted = sorted(ROLE_ARN_PREFIX + str(name["Fn::Sub"]) for name in roles.values())
    statements = template["Resources"][DATA_KEY]["Properties"]["KeyPolicy"]["Statement"]
    (users,) = [statement for statement in statements if statement.get("Sid") == DATA_KEY_USERS_STATEMENT]
    named = sorted(str(arn["Fn::Sub"]) for arn in users["Condition"]["ArnEquals"]["aws:PrincipalArn"])
    if named != wanted:
        raise TemplateError(f"resources.yaml: {DATA_KEY}'s users {named} are not the stack's roles {wanted}")


def _api_stage(chalice_config: dict[str, Any], stage: str) -> Template:
    """Overrides of Chalice's API: one stage, traced like the API's function."""
    # Without OpenApiVersion SAM deploys the API a second time, to a stage
    # named `Stage`, which neither the stage throttling nor the usage plan
    # covers. X-Ray then follows a request from the API into the functions.
    xray = bool(_stage_config(chalice_config, stage, API_HANDLER).xray_enabled)
    return {"Properties": {"OpenApiVersion": API_OPENAPI_VERSION, "TracingEnabled": xray}}


def _set_event_sources(
    template: Template,
    event_sources: Mapping[str, Any],
    resources: Template,
    environment: Mapping[str, str],
    handlers: Sequence[str],
) -> None:
    """Overrides of Chalice's event source mappings: the source by reference, and event_sources.json's settings."""
    for handler in event_sources:
        if handler not in EVENT_SOURCE_KINDS or handler not in handlers:
            raise TemplateError(f"event_sources.json: {handler!r} is not an event-driven handler of the app")
    for handler, kind in EVENT_SOURCE_KINDS.items():
        if handler not in handlers:
            raise TemplateError(f"{CHALICE_CONFIG_PATH}: lambda_functions must list every handler, {handler} too")
        event_id = to_cfn_resource_name(f"{handler}-{kind.lower()}-event-source")
        properties = _event_source_reference(handler, kind, resources, environment)
        properties.update(_event_source_properties(handler, event_sources.get(handler, {}), kind, resources))
        function = template["Resources"][function_logical_ids(handler)[0]]
        function["Properties"]["Events"] = {event_id: {"Properties": properties}}


def stage_parameters(template: Template) -> dict[str, str]:
    """The parameters whose values the stage's config decides, as `aws cloudformation deploy` overrides.

    `aws cloudformation deploy` keeps a parameter's previous value on update
    unless it is overridden, so a changed default (e.g. PLACEMENT_MAX_ATTEMPTS
    in .chalice/config.json) would never reach an existing stack otherwise.
    """
    return {name: str(template["Parameters"][name]["Default"]) for name in STAGE_PARAMETERS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", required=True, help="a stage of .chalice/config.json, e.g. dev or prod")
    parser.add_argument("--out", type=Path, required=True, help="where to write the template (JSON)")
    parser.add_argument(
        "--parameters-out", type=Path, help="where to write the stage's parameter values (Key=Value, one a line)"
    )
    args = parser.parse_args(argv)
    try:
        template = build_template(args.stage)
    except TemplateError as exc:
        print(f"build_template: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(template, indent=2) + "\n", encoding="utf-8")
    if args.parameters_out is not None:
        lines = [f"{name}={value}\n" for name, value in stage_parameters(template).items()]
        args.parameters_out.parent.mkdir(parents=True, exist_ok=True)
        args.parameters_out.write_text("".join(lines), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
