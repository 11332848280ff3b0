"""The order event stream's part of the packaged stack (issue 16): the WebSocket API, who may push on it, its condition.

The orders-table stream mapping is checked beside the other mappings
(test_package.py, test_expanded_template.py), the functions' DynamoDB grants
in test_package_iam.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.tooling.template_support import (
    CHALICE_CONFIG,
    HANDLERS,
    REPO,
    Packaged,
    function_id,
    getatt,
    load_infra_script,
    role_of,
    role_statements,
)

pytestmark = pytest.mark.integration

stream_template = load_infra_script("stream_template")

CONDITION = "DeployWebSocketApi"
NO_VALUE = {"Ref": "AWS::NoValue"}
# Route -> the app.py handler API Gateway calls for it (docs: "WebSocket protocol").
ROUTE_HANDLERS = {"$connect": "stream_connect", "$default": "stream_message", "$disconnect": "stream_disconnect"}
PUSHERS = {"publish_order_events", "websocket_message", "close_revoked_stream_connections"}


def stage_name(packaged: Packaged) -> str:
    return str(CHALICE_CONFIG["stages"][packaged.stage]["api_gateway_stage"])


def references(value: Any, guard: str | None = None) -> Iterator[tuple[str, str | None]]:
    """(logical id, the Fn::If condition it is under, if any) of every Ref, GetAtt and Fn::Sub variable in value."""
    if isinstance(value, list):
        for item in value:
            yield from references(item, guard)
        return
    if not isinstance(value, dict):
        return
    for function, argument in value.items():
        if function == "Ref" and isinstance(argument, str):
            yield argument, guard
        elif function == "Fn::GetAtt":
            yield str(argument[0]), guard
        elif function == "Fn::Sub":
            text, local = (argument, {}) if isinstance(argument, str) else argument
            for variable in re.findall(r"\$\{([^}!]+)\}", text):
                if variable.split(".")[0] not in local:
                    yield variable.split(".")[0], guard
            yield from references(local, guard)
        elif function == "Fn::If":
            condition, when_true, when_false = argument
            yield from references(when_true, condition)
            yield from references(when_false, guard)
        else:
            yield from references(argument, guard)


def unguarded_uses_of_conditioned(template: dict[str, Any]) -> list[str]:
    """Where something exists without the condition but uses what exists only with it."""
    resources = template["Resources"]
    conditioned = {logical_id for logical_id, r in resources.items() if r.get("Condition") == CONDITION}
    found = []
    for section in ("Resources", "Outputs"):
        for logical_id, item in template.get(section, {}).items():
            if item.get("Condition") == CONDITION:
                continue
            depends_on = item.get("DependsOn", [])
            used = list(references(item.get("Properties", item.get("Value")))) + [
                (name, None) for name in ([depends_on] if isinstance(depends_on, str) else depends_on)
            ]
            found += [f"{section}.{logical_id} -> {name}" for name, guard in used if name in conditioned and not guard]
    return found


def test_the_websocket_api_is_chalices_routed_by_action_to_the_apps_handlers(packaged: Packaged) -> None:
    def v2(template: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in template["Resources"].items() if v["Type"].startswith("AWS::ApiGatewayV2::")}

    resources = v2(packaged.template)
    # Overrides only: no resource of the merge template that Chalice did not generate.
    assert set(resources) == set(v2(packaged.plain))
    api = resources["WebsocketAPI"]["Properties"]
    assert (api["ProtocolType"], api["RouteSelectionExpression"]) == ("WEBSOCKET", "$request.body.action")
    assert resources["WebsocketAPIStage"]["Properties"]["StageName"] == stage_name(packaged)
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for r in resources.values() if r["Type"].endswith("Route")}
    assert set(routes) == set(ROUTE_HANDLERS)
    for route, properties in routes.items():
        integration = resources[properties["Target"]["Fn::Join"][1][1]["Ref"]]["Properties"]
        function = integration["IntegrationUri"]["Fn::Sub"][1]["WebsocketHandler"]["Ref"]
        assert function == function_id(stream_template.WEBSOCKET_HANDLERS[route])
        assert packaged.resources[function]["Properties"]["Handler"] == f"app.{ROUTE_HANDLERS[route]}"
    # The REST API's throttling holds on every route here too.
    assert resources["WebsocketAPIStage"]["Properties"]["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ApiThrottleRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ApiThrottleBurstLimit"},
    }


def test_the_websocket_api_and_everything_using_it_exist_only_under_its_condition(packaged: Packaged) -> None:
    parameters, conditions = packaged.template["Parameters"], packaged.template["Conditions"]
    assert parameters["WebSocketApi"]["Default"] == "enabled"
    assert parameters["WebSocketApi"]["AllowedValues"] == ["enabled", "disabled"]
    assert conditions[CONDITION] == {"Fn::Equals": [{"Ref": "WebSocketApi"}, "enabled"]}
    conditioned = {k for k, v in packaged.resources.items() if v.get("Condition") == CONDITION}
    pushers = {f"{function_id(handler)}ManagesStreamConnections" for handler in PUSHERS}
    v2 = {k for k, v in packaged.resources.items() if v["Type"].startswith("AWS::ApiGatewayV2::")}
    invoke = {f"{function_id(handler)}InvokePermission" for handler in stream_template.WEBSOCKET_HANDLERS.values()}
    assert conditioned == v2 | invoke | pushers
    # The functions themselves stay: only what needs the API goes with it.
    assert not {function_id(handler) for handler in HANDLERS} & conditioned
    # Nothing outside the condition uses what is under it, but inside a Fn::If on it (else
    # WebSocketApi=disabled could not deploy), in the SAM and in the expanded template.
    assert unguarded_uses_of_conditioned(packaged.template) == []
    assert unguarded_uses_of_conditioned(packaged.expanded) == []
    for output in ("WebsocketAPIId", "WebsocketConnectEndpointURL", "StreamUrl"):
        assert packaged.template["Outputs"][output]["Condition"] == CONDITION, output


def test_the_stream_url_is_the_wss_url_of_the_apis_stage(packaged: Packaged) -> None:
    output = packaged.template["Outputs"]["StreamUrl"]["Value"]
    url = output["Fn::Sub"].replace("${WebsocketAPI}", "a1b2c3").replace("${AWS::Region}", "eu-west-1")
    assert url.replace("${AWS::URLSuffix}", "amazonaws.com") == (
        f"wss://a1b2c3.execute-api.eu-west-1.amazonaws.com/{stage_name(packaged)}"
    )


def test_the_functions_that_push_get_the_management_url_and_may_manage_this_apis_connections_only(
    packaged: Packaged,
) -> None:
    management = "https://${WebsocketAPI}.execute-api.${AWS::Region}.${AWS::URLSuffix}/" + stage_name(packaged)
    for handler in HANDLERS:
        variables = packaged.resources[function_id(handler)]["Properties"]["Environment"]["Variables"]
        if handler in PUSHERS:
            # Without the API the variable is left out: the setting keeps its default, nobody to push to.
            assert variables["STREAM_MANAGEMENT_URL"] == {"Fn::If": [CONDITION, {"Fn::Sub": management}, NO_VALUE]}
        else:
            assert "STREAM_MANAGEMENT_URL" not in variables, handler
    # POST sends a message, DELETE closes a connection: who does which.
    methods = {
        "publish_order_events": ["POST", "DELETE"],  # it closes a connection that lags too far behind
        "websocket_message": ["POST"],
        "close_revoked_stream_connections": ["DELETE"],
    }
    arn = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${WebsocketAPI}/"
    granted: dict[str, Any] = {}
    for logical_id, resource in packaged.resources.items():
        if resource["Type"] == "AWS::IAM::RolePolicy":
            (statement,) = resource["Properties"]["PolicyDocument"]["Statement"]
            assert statement["Action"] == ["execute-api:ManageConnections"], logical_id
            granted[resource["Properties"]["RoleName"]["Ref"]] = statement["Resource"]
    assert granted == {
        role_of(packaged.template, function_id(handler)): [
            {"Fn::Sub": f"{arn}{stage_name(packaged)}/{method}/@connections/*"} for method in methods[handler]
        ]
        for handler in PUSHERS
    }
    # No role's own policy touches execute-api.
    for handler in HANDLERS:
        for statement in role_statements(packaged.template, role_of(packaged.template, function_id(handler))):
            assert not any(str(action).startswith("execute-api:") for action in statement["Action"]), handler


def test_the_pusher_calls_only_the_management_api_methods_granted(packaged: Packaged) -> None:
    # chalicelib/adapters/connection_management.py: post_to_connection (POST) and delete_connection (DELETE).
    source = (REPO / "chalicelib" / "adapters" / "connection_management.py").read_text(encoding="utf-8")
    calls = set(re.findall(r"\.client\.(\w+)\(", source))
    assert calls == {"post_to_connection", "delete_connection"}
    assert set(stream_template.CONNECTION_MANAGERS) == PUSHERS


def _alarm(packaged: Packaged, logical_id: str) -> dict[str, Any]:
    alarm = packaged.resources[logical_id]
    assert alarm["Type"] == "AWS::CloudWatch::Alarm"
    properties: dict[str, Any] = alarm["Properties"]
    assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert properties["TreatMissingData"] == "notBreaching"
    return properties


def test_order_changes_set_aside_or_a_lagging_publisher_raise_alarms(packaged: Packaged) -> None:
    failed = _alarm(packaged, "OrderEventsFailedQueueNotEmptyAlarm")
    assert (failed["Namespace"], failed["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert failed["Dimensions"] == [{"Name": "QueueName", "Value": getatt("OrderEventsFailedQueue", "QueueName")}]
    assert (failed["ComparisonOperator"], failed["Threshold"]) == ("GreaterThanThreshold", 0)
    lag = _alarm(packaged, "OrderEventsIteratorAgeAlarm")
    assert (lag["Namespace"], lag["MetricName"]) == ("AWS/Lambda", "IteratorAge")
    assert lag["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "PublishOrderEvents"}}]
    assert lag["Threshold"] == {"Ref": "OrderEventsIteratorAgeMilliseconds"}
    # Well inside the 24 h a DynamoDB stream keeps a record.
    assert packaged.template["Parameters"]["OrderEventsIteratorAgeMilliseconds"]["Default"] < 24 * 3600 * 1000
