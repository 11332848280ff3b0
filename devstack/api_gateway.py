"""API Gateway, emulated for the local API: chalice local's LocalGateway with the deployed authorizer setup, as WSGI.

The routing, proxy events, CORS preflights and binary types are chalice
local's `LocalGateway`; only its authorizer step is replaced by what the
deployed API does (a REQUEST authorizer and our gateway responses from
infra/gateway_responses.json), followed by the accounts' rate limits that
API Gateway's usage plans apply (devstack/rate_limiter.py). `GatewayWsgiApp` puts it behind any WSGI
server, so that devstack/api_server.py can serve it from a production one
instead of chalice local's BaseHTTPServer.
"""

from __future__ import annotations

import base64
import http
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalice.app import Chalice, ChaliceAuthorizer
from chalice.cli.factory import CLIFactory
from chalice.config import Config
from chalice.deploy.validate import validate_routes
from chalice.local import (
    ARNMatcher,
    CustomLocalChalice,
    InvalidAuthorizerError,
    LambdaContext,
    LocalARNBuilder,
    LocalChalice,
    LocalGateway,
    LocalGatewayException,
)

from devstack.rate_limiter import AccountThrottle

REPO_ROOT = Path(__file__).resolve().parent.parent
# The same file infra/build_template.py puts into the deployed API.
GATEWAY_RESPONSES_PATH = REPO_ROOT / "infra" / "gateway_responses.json"
# THROTTLED: devstack/rate_limiter.py's per-account limits; QUOTA_EXCEEDED is loaded to match the
# deployed set, never answered (no usage plan has a quota).
EMULATED_RESPONSES = ("ACCESS_DENIED", "UNAUTHORIZED", "AUTHORIZER_FAILURE", "THROTTLED", "QUOTA_EXCEEDED")
# The only variables our gateway response templates use; anything else would
# render differently here than on API Gateway, so it is refused at start.
_AUTHORIZER_VARIABLE = re.compile(r"\$context\.authorizer\.(\w+)")
_ANY_VARIABLE = re.compile(r"\$\w")
_HEADER_PARAMETER = re.compile(r"gatewayresponse\.header\.(?P<name>[A-Za-z0-9-]+)")
# What API Gateway's x-amzn-ErrorType says for each response.
_ERROR_TYPES = {
    "ACCESS_DENIED": "AccessDeniedException",
    "UNAUTHORIZED": "UnauthorizedException",
    "AUTHORIZER_FAILURE": "AuthorizerFailureException",
    "THROTTLED": "TooManyRequestsException",
    "QUOTA_EXCEEDED": "LimitExceededException",
}
# The error message a Lambda authorizer raises to get API Gateway's UNAUTHORIZED response.
_UNAUTHORIZED_ERROR = "Unauthorized"

log = logging.getLogger("devstack.api_gateway")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True)
class GatewayResponse:
    """One entry of infra/gateway_responses.json, as API Gateway renders it."""

    status: int
    headers: dict[str, str]
    template: str

    def render(self, authorizer_context: Mapping[str, Any]) -> bytes:
        # API Gateway substitutes the value as it is, without JSON escaping;
        # so does this (our messages hold no quotes).
        return _AUTHORIZER_VARIABLE.sub(lambda match: str(authorizer_context.get(match[1], "")), self.template).encode()


def load_gateway_responses(path: Path = GATEWAY_RESPONSES_PATH) -> dict[str, GatewayResponse]:
    """The gateway responses the deployed API has, for the ones an authorizer leads to; ValueError if unusable."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    responses: dict[str, GatewayResponse] = {}
    for response_type in EMULATED_RESPONSES:
        spec = raw.get(response_type)
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: no {response_type} response")
        template = spec.get("responseTemplates", {}).get("application/json")
        if not isinstance(template, str) or _ANY_VARIABLE.search(_AUTHORIZER_VARIABLE.sub("", template)):
            raise ValueError(f"{path}: {response_type} needs an application/json template using $context.authorizer.*")
        headers = {"Content-Type": "application/json"}
        for parameter, value in spec.get("responseParameters", {}).items():
            match = _HEADER_PARAMETER.fullmatch(parameter)
            if match is None or not re.fullmatch(r"'[^']*'", value):
                raise ValueError(f"{path}: {response_type}: {parameter} is not a static header")
            headers[match["name"]] = value[1:-1]
        responses[response_type] = GatewayResponse(int(spec["statusCode"]), headers, template)
    return responses


class GatewayResponseError(LocalGatewayException):
    """Answer a gateway response instead of calling the route."""

    def __init__(
        self,
        response_type: str,
        response: GatewayResponse,
        context: Mapping[str, Any],
        request_id: str,
        headers: Mapping[str, str] | None = None,
    ):
        headers = {
            **response.headers,
            **(headers or {}),
            "x-amzn-RequestId": request_id,
            "x-amzn-ErrorType": _ERROR_TYPES[response_type],
        }
        super().__init__(headers, response.render(context))
        self.CODE = response.status  # the status the WSGI adapter answers with


def _statements_match(policy: Mapping[str, Any], effect: str, arn: str) -> bool:
    matcher = ARNMatcher(arn)
    for statement in policy.get("Statement", []):
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = statement.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        invoke = any(action in ("execute-api:Invoke", "execute-api:*", "*") for action in actions)
        if statement.get("Effect") == effect and invoke and matcher.does_any_resource_match(resources):
            return True
    return False


class RequestAuthorizer:
    """In place of chalice.local.LocalGatewayAuthorizer: what API Gateway does with our deployed authorizer.

    Chalice's local authorizer step is a TOKEN authorizer on the Authorization
    header: it answers 401 by itself when that header is missing, passes the
    function nothing else (no x-api-key), and turns a Deny into a 403. The
    deployed API instead calls the function as a REQUEST authorizer, without
    caching, and answers with infra/gateway_responses.json (see
    infra/build_template.py). This does the same: every request to a route
    with an authorizer calls it with a REQUEST event holding every header;
    Allow passes its context to the route as requestContext.authorizer, Deny
    (or no matching Allow) is the ACCESS_DENIED response, an "Unauthorized"
    error the UNAUTHORIZED one, any other error AUTHORIZER_FAILURE. Then, as
    a usage plan does after the authorizer on AWS, the throttle (if any) takes
    a token of the allowed account: none left is the THROTTLED response.
    """

    def __init__(
        self, app: Chalice, responses: Mapping[str, GatewayResponse], throttle: AccountThrottle | None = None
    ) -> None:
        self._app = app
        self._responses = responses
        self._arns = LocalARNBuilder()
        self._throttle = throttle

    def authorize(
        self, raw_path: str, lambda_event: dict[str, Any], lambda_context: LambdaContext
    ) -> tuple[dict[str, Any], LambdaContext]:
        request_context = lambda_event["requestContext"]
        method = request_context["httpMethod"]
        route = self._app.routes.get(request_context.get("resourcePath"), {}).get(method)
        authorizer = route.authorizer if route is not None else None
        if authorizer is None:
            return lambda_event, lambda_context
        if not isinstance(authorizer, ChaliceAuthorizer):
            raise TypeError(f"only Chalice's built-in authorizers are emulated, not {type(authorizer).__name__}")
        arn = self._arns.build_arn(method, raw_path)
        request_id = str(lambda_context.aws_request_id)
        try:
            result = authorizer(self._request_event(arn, lambda_event), lambda_context)
        except Exception as exc:
            if str(exc) == _UNAUTHORIZED_ERROR:
                raise self._answer("UNAUTHORIZED", {}, request_id) from exc
            log.exception("the authorizer failed")
            raise self._answer("AUTHORIZER_FAILURE", {}, request_id) from exc
        if not isinstance(result, dict) or "principalId" not in result or "policyDocument" not in result:
            # API Gateway's AUTHORIZER_CONFIGURATION_ERROR: a bug of ours, not the caller's.
            raise InvalidAuthorizerError(
                {"x-amzn-RequestId": request_id, "x-amzn-ErrorType": "AuthorizerConfigurationException"},
                b'{"message":null}',
            )
        context = dict(result.get("context") or {})
        policy = result["policyDocument"]
        if _statements_match(policy, "Deny", arn) or not _statements_match(policy, "Allow", arn):
            raise self._answer("ACCESS_DENIED", context, request_id)
        request_context["authorizer"] = {**context, "principalId": result["principalId"]}
        self._take_token(str(context.get("account_id") or result["principalId"]), request_id)
        return lambda_event, lambda_context

    def _take_token(self, account_id: str, request_id: str) -> None:
        if self._throttle is None:
            return
        retry_after = self._throttle.retry_after(account_id)
        if retry_after is not None:
            # The wait until the account's next token (at most 1 s for any limit it may have).
            raise self._answer("THROTTLED", {}, request_id, {"Retry-After": str(retry_after)})

    def _answer(
        self, response_type: str, context: Mapping[str, Any], request_id: str, headers: Mapping[str, str] | None = None
    ) -> GatewayResponseError:
        return GatewayResponseError(response_type, self._responses[response_type], context, request_id, headers)

    @staticmethod
    def _request_event(arn: str, lambda_event: Mapping[str, Any]) -> dict[str, Any]:
        """A REQUEST authorizer event as API Gateway sends one (REST API), from chalice's proxy event."""
        headers = dict(lambda_event.get("headers") or {})
        query = lambda_event.get("multiValueQueryStringParameters")
        request_context = lambda_event["requestContext"]
        return {
            "type": "REQUEST",
            "methodArn": arn,
            "resource": request_context.get("resourcePath"),
            "path": request_context.get("path"),
            "httpMethod": request_context["httpMethod"],
            "headers": headers,
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "queryStringParameters": {name: values[-1] for name, values in query.items()} if query else None,
            "multiValueQueryStringParameters": query,
            "pathParameters": lambda_event.get("pathParameters"),
            "stageVariables": lambda_event.get("stageVariables"),
            "requestContext": dict(request_context),
        }


def load_chalice_app(stage: str, project_dir: Path) -> tuple[Chalice, Config]:
    """The app and its stage's config as `chalice local` loads them: environment first, routes validated."""
    # As chalice's CLI does: the stage's environment_variables go into os.environ before app.py is imported.
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    factory = CLIFactory(str(project_dir), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    app = config.chalice_app
    validate_routes(app.routes)
    # What chalice.local.create_local_server does: the app's current_request
    # becomes thread-local, so threads serving requests at once each see their own.
    if not isinstance(app, LocalChalice):
        CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
        app.__class__ = CustomLocalChalice
    return app, config


def local_gateway(
    app: Chalice, config: Config, responses: Mapping[str, GatewayResponse], throttle: AccountThrottle | None = None
) -> LocalGateway:
    """chalice local's LocalGateway with the deployed API's authorizer step (and the accounts' rate limits)."""
    gateway = LocalGateway(app, config)
    # LocalGateway has no hook for its authorizer: set the attribute it calls
    # (chalice 1.34, pinned in requirements-dev.txt; tests/tooling/test_api_server.py
    # fails if a new version renames it).
    gateway._authorizer = RequestAuthorizer(app, responses, throttle)  # type: ignore[assignment]
    return gateway


def _request_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    # Lower-case names, as API Gateway's proxy event has them and as chalice's
    # binary-type check (headers["content-type"]) expects.
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def _request_target(environ: Mapping[str, Any]) -> str:
    # The path as the client sent it (still percent-encoded), which is what
    # chalice local's route matcher gets; WSGI's PATH_INFO is decoded.
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    query = environ.get("QUERY_STRING")
    return f"{environ.get('PATH_INFO') or '/'}{'?' + query if query else ''}"


def _request_body(environ: Mapping[str, Any]) -> bytes | None:
    length = environ.get("CONTENT_LENGTH")
    stream = environ["wsgi.input"]
    if length:
        body = stream.read(int(length))
    elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        body = stream.read()  # the server decodes the chunks and ends the stream at the last one
    else:
        return None
    return body or None  # chalice local passes no body as None


class GatewayWsgiApp:
    """A WSGI application answering as chalice local's request handler does, through our LocalGateway."""

    def __init__(self, gateway: LocalGateway) -> None:
        self._gateway = gateway

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self._gateway.handle_request(
                method=environ["REQUEST_METHOD"],
                path=_request_target(environ),
                headers=_request_headers(environ),
                body=_request_body(environ),
            )
        except LocalGatewayException as error:
            return self._answer(start_response, error.CODE, dict(error.headers), error.body)
        headers: dict[str, Any] = {**response["headers"], **response.get("multiValueHeaders", {})}
        body = response["body"]
        if response.get("isBase64Encoded"):
            body = base64.b64decode(body)
        return self._answer(start_response, response["statusCode"], headers, body)

    @staticmethod
    def _answer(
        start_response: StartResponse, status: int, headers: dict[str, Any], body: str | bytes | None
    ) -> list[bytes]:
        payload = body.encode("utf-8") if isinstance(body, str) else (body or b"")
        lines: list[tuple[str, str]] = []
        if body is not None:
            # chalice local's default, and API Gateway's for a Lambda proxy answer without one.
            content_type = next((name for name in headers if name.lower() == "content-type"), None)
            lines.append(("Content-Type", str(headers.pop(content_type) if content_type else "application/json")))
        for name, value in headers.items():
            if name.lower() in ("content-length", "connection", "transfer-encoding"):
                continue  # the server's to set: it frames the body and keeps the connection alive
            values = value if isinstance(value, list) else [value]
            lines.extend((name, str(one)) for one in values)
        lines.append(("Content-Length", str(len(payload))))
        start_response(f"{status} {_reason(status)}", lines)
        return [payload]


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def create_wsgi_app(
    stage: str = "local",
    project_dir: Path = REPO_ROOT,
    responses: Mapping[str, GatewayResponse] | None = None,
    throttle: Callable[[], AccountThrottle] | None = None,
) -> GatewayWsgiApp:
    """The project's Chalice app behind the emulated API Gateway, as one WSGI application.

    throttle: makes the accounts' rate limits step, once the app's stage has
    set the environment (None: no rate limits).
    """
    app, config = load_chalice_app(stage, project_dir)
    gateway_responses = load_gateway_responses() if responses is None else responses
    return GatewayWsgiApp(local_gateway(app, config, gateway_responses, throttle() if throttle else None))
