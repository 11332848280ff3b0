"""The order events' part of the merge template (issue 16): the WebSocket API's overrides and who may push on it.

Chalice emits the WebSocket API (`AWS::ApiGatewayV2::*`, experimental
WEBSOCKETS flag) with logical ids of its own; infra/build_template.py merges
what this module builds over them:

- every WebSocket API resource and output under the condition
  `DeployWebSocketApi` (parameter `WebSocketApi`, operations.yaml), so a target
  without API Gateway v2 (LocalStack community: `make test-deploy`) deploys
  the rest of the stack and no placeholder API;
- `STREAM_MANAGEMENT_URL` (the management API the functions post to and close
  connections with) and `execute-api:ManageConnections` on this API's stage
  only, for exactly the handlers that push (CONNECTION_MANAGERS).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from chalice.utils import to_cfn_resource_name

Template = dict[str, Any]

# The parameter and condition of infra/operations.yaml that decide whether the API exists.
WEBSOCKET_API_CONDITION = "DeployWebSocketApi"
# Chalice's logical ids (chalice/package.py, _generate_websocketapi).
WEBSOCKET_API = "WebsocketAPI"
WEBSOCKET_STAGE = "WebsocketAPIStage"
WEBSOCKET_DEPLOYMENT = "WebsocketAPIDeployment"
# Chalice's outputs that name the API; both need the API's condition.
WEBSOCKET_OUTPUTS = ("WebsocketAPIId", "WebsocketConnectEndpointURL")
# Route key -> the handler name Chalice gives its function (and .chalice/config.json's lambda_functions key).
WEBSOCKET_HANDLERS = {
    "$connect": "websocket_connect",
    "$default": "websocket_message",
    "$disconnect": "websocket_disconnect",
}
# Handlers that push to connections, and the management API methods their
# code calls (chalicelib/adapters/connection_management.py: POST sends a
# message, DELETE closes). $connect cannot post (the connection is not open
# until it returns) and $disconnect has nothing to post to.
CONNECTION_MANAGERS: Mapping[str, tuple[str, ...]] = {
    # Sends events, and closes a connection too far behind to catch up (service/stream.py).
    "publish_order_events": ("POST", "DELETE"),
    "websocket_message": ("POST",),
    "close_revoked_stream_connections": ("DELETE",),
}
STREAM_MANAGEMENT_URL_VARIABLE = "STREAM_MANAGEMENT_URL"
# https://{api-id}.execute-api.{region}.amazonaws.com/{stage}: the management
# API; StreamUrl is the same with wss://. The stage by its name (the stage's
# api_gateway_stage, which Chalice gives WebsocketAPIStage), not by a Ref:
# the stage depends on the deployment, the routes, their integrations and so
# on the functions, which then could not depend on the stage.
_API_HOST = f"${{{WEBSOCKET_API}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}"
# execute-api:ManageConnections is authorized on
# arn:...:execute-api:{region}:{account}:{api-id}/{stage}/{METHOD}/@connections/{connection id}.
_CONNECTIONS_ARN = f"arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{{WEBSOCKET_API}}}"


def management_url(stage_name: str) -> str:
    """The Fn::Sub text of the stage's management API URL."""
    return f"https://{_API_HOST}/{stage_name}"


def stream_url(stage_name: str) -> str:
    """The Fn::Sub text of the stage's wss:// URL, the StreamUrl output."""
    return f"wss://{_API_HOST}/{stage_name}"


def websocket_handlers(handlers: Iterable[str]) -> list[str]:
    """The WebSocket handlers among .chalice/config.json's, in route order."""
    configured = set(handlers)
    return [handler for handler in WEBSOCKET_HANDLERS.values() if handler in configured]


def websocket_resource_ids(handlers: Iterable[str]) -> list[str]:
    """Chalice's logical ids of the API and of everything that refers to it, for these WebSocket handlers."""
    present = websocket_handlers(handlers)
    if not present:
        return []
    ids = [WEBSOCKET_API, WEBSOCKET_DEPLOYMENT, WEBSOCKET_STAGE]
    for route, handler in WEBSOCKET_HANDLERS.items():
        if handler in present:
            function = to_cfn_resource_name(handler)
            route_name = route.replace("$", "").replace("default", "message").capitalize()
            route_id = f"Websocket{route_name}Route"
            ids += [route_id, f"{function}APIIntegration", f"{function}InvokePermission"]
    return ids


def _if_deployed(value: Any) -> Template:
    return {"Fn::If": [WEBSOCKET_API_CONDITION, value, {"Ref": "AWS::NoValue"}]}


def management_environment(handler: str, handlers: Iterable[str], stage_name: str) -> dict[str, Any]:
    """STREAM_MANAGEMENT_URL for a handler that pushes, when the app has a WebSocket API; else nothing.

    Without the API (WebSocketApi=disabled) the variable is left out and the
    setting keeps its default: there is no connection to push to.
    """
    if handler not in CONNECTION_MANAGERS or not websocket_handlers(handlers):
        return {}
    return {STREAM_MANAGEMENT_URL_VARIABLE: _if_deployed({"Fn::Sub": management_url(stage_name)})}


def _manage_connections_policy(handler: str, role_id: str, stage_name: str) -> Template:
    methods = CONNECTION_MANAGERS[handler]
    return {
        "Type": "AWS::IAM::RolePolicy",
        "Condition": WEBSOCKET_API_CONDITION,
        "Properties": {
            "RoleName": {"Ref": role_id},
            "PolicyName": "ManageStreamConnections",
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "PushToThisStacksWebSocketConnectionsOnly",
                        "Effect": "Allow",
                        "Action": ["execute-api:ManageConnections"],
                        "Resource": [
                            {"Fn::Sub": f"{_CONNECTIONS_ARN}/{stage_name}/{method}/@connections/*"}
                            for method in methods
                        ],
                    }
                ],
            },
        },
    }


def websocket_overrides(handlers: Iterable[str], role_ids: Mapping[str, str], stage_name: str) -> Template:
    """Resources and Outputs to merge: the API's condition, StreamUrl, the push grants."""
    handlers = list(handlers)
    ids = websocket_resource_ids(handlers)
    if not ids:
        return {"Resources": {}, "Outputs": {}}
    resources: Template = {logical_id: {"Condition": WEBSOCKET_API_CONDITION} for logical_id in ids}
    for handler in CONNECTION_MANAGERS:
        if handler in handlers:
            resources[f"{to_cfn_resource_name(handler)}ManagesStreamConnections"] = _manage_connections_policy(
                handler, role_ids[handler], stage_name
            )
    outputs: Template = {output: {"Condition": WEBSOCKET_API_CONDITION} for output in WEBSOCKET_OUTPUTS}
    outputs["StreamUrl"] = {
        "Condition": WEBSOCKET_API_CONDITION,
        "Description": "The order event stream (WebSocket): wss://{api}.execute-api.{region}.amazonaws.com/{stage}.",
        "Value": {"Fn::Sub": stream_url(stage_name)},
    }
    return {"Resources": resources, "Outputs": outputs}
