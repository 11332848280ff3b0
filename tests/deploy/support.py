"""Talking to the deployed stack: what was deployed, invoking its functions, the events API Gateway would send them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3

from devstack.emulator import EMULATOR_ENV

ACCOUNT = "000000000000"  # LocalStack's default account
REGION = "us-east-1"


@dataclass
class DeployedStack:
    """What `make deploy` made: the stack's endpoint, outputs and function names, and the simulator it calls."""

    endpoint_url: str
    outputs: dict[str, str]
    exchange_url: str
    function_names: dict[str, str]  # handler -> deployed function name
    websocket_api: bool = False  # deployed with WebSocketApi=enabled (the target has API Gateway v2)

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=EMULATOR_ENV["AWS_DEFAULT_REGION"])

    @property
    def api_id(self) -> str:
        return self.outputs["RestAPIId"]


@dataclass(frozen=True)
class Invocation:
    """What a synchronous Lambda invoke returned: the function's result, or its error."""

    payload: Any
    function_error: str | None


# A function with a reserved concurrency of 1 (the sweep, the reconciler) refuses a second invocation
# while its schedule's run is under way: the test's invoke waits for that run as a caller would.
THROTTLED_RETRY_S = 60.0


def invoke(lambda_client: Any, function_name: str, event: Mapping[str, Any]) -> Invocation:
    deadline = time.monotonic() + THROTTLED_RETRY_S
    while True:
        try:
            response = lambda_client.invoke(FunctionName=function_name, Payload=json.dumps(event).encode())
        except lambda_client.exceptions.TooManyRequestsException:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1)
            continue
        return Invocation(json.loads(response["Payload"].read() or b"null"), response.get("FunctionError"))


def authorizer_event(api_id: str, headers: Mapping[str, str], method: str = "POST", path: str = "/orders") -> Any:
    """The REQUEST authorizer event API Gateway sends (the deployed authorizer is a REQUEST one, without caching)."""
    return {
        "type": "REQUEST",
        "methodArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{api_id}/api/{method}{path}",
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": dict(headers),
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {"stage": "api", "httpMethod": method, "resourcePath": path, "apiId": api_id},
    }


def proxy_event(
    api_id: str,
    method: str,
    resource: str,
    path_parameters: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
    authorizer: Mapping[str, Any] | None = None,
    query: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Lambda proxy event API Gateway (REST) sends after an Allow, carrying the authorizer's context.

    LocalStack community never calls Lambda authorizers from API Gateway, so
    the tests build what AWS would: the route, and `requestContext.authorizer`
    with the context the authorizer returned plus its principal.
    """
    path = resource
    for name, value in (path_parameters or {}).items():
        path = path.replace("{" + name + "}", value)
    headers = {"Content-Type": "application/json", "Host": f"{api_id}.execute-api.{REGION}.amazonaws.com"}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": dict(query) if query else None,
        "multiValueQueryStringParameters": {name: [value] for name, value in query.items()} if query else None,
        "pathParameters": dict(path_parameters) if path_parameters else None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/api{path}",
            "stage": "api",
            "apiId": api_id,
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1"},
            "authorizer": dict(authorizer) if authorizer else None,
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def allowed_context(decision: Mapping[str, Any]) -> dict[str, Any]:
    """What API Gateway puts in `requestContext.authorizer` after an Allow: the context plus the principal."""
    return {**decision.get("context", {}), "principalId": decision["principalId"]}


def effect_of(decision: Mapping[str, Any]) -> str:
    return str(decision["policyDocument"]["Statement"][0]["Effect"])


def websocket_event(
    api_id: str,
    route: str,
    connection_id: str,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    body: str | None = None,
) -> dict[str, Any]:
    """The event API Gateway's WebSocket API sends a route's function ($connect, $default, $disconnect)."""
    event_type = {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route, "MESSAGE")
    event: dict[str, Any] = {
        "requestContext": {
            "routeKey": route,
            "eventType": event_type,
            "connectionId": connection_id,
            "domainName": f"{api_id}.execute-api.{REGION}.amazonaws.com",
            "stage": "api",
            "apiId": api_id,
            "requestId": str(uuid.uuid4()),
            "connectedAt": int(time.time() * 1000),
        },
        "headers": dict(headers) if headers else None,
        "multiValueHeaders": {name: [value] for name, value in headers.items()} if headers else None,
        "queryStringParameters": dict(query) if query else None,
        "isBase64Encoded": False,
    }
    if body is not None:
        event["body"] = body
    return event


def authorize(deployed: DeployedStack, headers: dict[str, str]) -> dict[str, Any]:
    result = invoke(
        deployed.client("lambda"),
        deployed.function_names["api_key_authorizer"],
        authorizer_event(deployed.api_id, headers),
    )
    assert result.function_error is None, result.payload
    return dict(result.payload)


def call_api(deployed: DeployedStack, event: dict[str, Any]) -> tuple[int, Any]:
    result = invoke(deployed.client("lambda"), deployed.function_names["api_handler"], event)
    assert result.function_error is None, result.payload
    return int(result.payload["statusCode"]), json.loads(result.payload["body"])
