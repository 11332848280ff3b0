"""`chalice local` with the deployed API's authorizer setup: REQUEST events with every header, our gateway responses."""

from __future__ import annotations

import argparse
import functools
import ipaddress
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalice.app import Chalice, ChaliceAuthorizer
from chalice.cli.factory import CLIFactory
from chalice.config import Config
from chalice.deploy.validate import validate_routes
from chalice.local import (
    ARNMatcher,
    ChaliceRequestHandler,
    InvalidAuthorizerError,
    LambdaContext,
    LocalARNBuilder,
    LocalDevServer,
    LocalGateway,
    LocalGatewayException,
    create_local_server,
)
from six.moves.BaseHTTPServer import BaseHTTPRequestHandler

REPO_ROOT = Path(__file__).resolve().parent.parent
# The same file infra/build_template.py puts into the deployed API.
GATEWAY_RESPONSES_PATH = REPO_ROOT / "infra" / "gateway_responses.json"
EMULATED_RESPONSES = ("ACCESS_DENIED", "UNAUTHORIZED", "AUTHORIZER_FAILURE")
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
}
# The error message a Lambda authorizer raises to get API Gateway's UNAUTHORIZED response.
_UNAUTHORIZED_ERROR = "Unauthorized"

log = logging.getLogger("devstack.api_server")
# Pending connections the kernel holds for the server (capped by net.core.somaxconn).
LISTEN_BACKLOG = 1024


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

    def __init__(self, response_type: str, response: GatewayResponse, context: Mapping[str, Any], request_id: str):
        headers = {**response.headers, "x-amzn-RequestId": request_id, "x-amzn-ErrorType": _ERROR_TYPES[response_type]}
        super().__init__(headers, response.render(context))
        self.CODE = response.status  # chalice's handler sends error.CODE as the status


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
    error the UNAUTHORIZED one, any other error AUTHORIZER_FAILURE.
    """

    def __init__(self, app: Chalice, responses: Mapping[str, GatewayResponse]) -> None:
        self._app = app
        self._responses = responses
        self._arns = LocalARNBuilder()

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
        return lambda_event, lambda_context

    def _answer(self, response_type: str, context: Mapping[str, Any], request_id: str) -> GatewayResponseError:
        return GatewayResponseError(response_type, self._responses[response_type], context, request_id)

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


class _RequestHandler(ChaliceRequestHandler):
    """chalice local's request handler with the authorizer step replaced; routing, CORS, binary types unchanged."""

    def __init__(
        self,
        request: Any,
        client_address: tuple[str, int],
        server: Any,
        app_object: Chalice,
        config: Config,
        responses: Mapping[str, GatewayResponse],
    ) -> None:
        self.local_gateway = LocalGateway(app_object, config)
        # LocalGateway has no hook for its authorizer: set the attribute it
        # calls (chalice 1.34, pinned in requirements-dev.txt; the tests of
        # this module fail if a new version renames it).
        self.local_gateway._authorizer = RequestAuthorizer(app_object, responses)  # type: ignore[assignment]
        # ChaliceRequestHandler.__init__ would build a second LocalGateway;
        # the base class's handles the request.
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)


def create_server(
    host: str,
    port: int,
    stage: str = "local",
    project_dir: Path = REPO_ROOT,
    responses: Mapping[str, GatewayResponse] | None = None,
) -> LocalDevServer:
    """What `chalice local` builds (app loaded with the stage's config, routes validated), our authorizer step in it."""
    responses = load_gateway_responses() if responses is None else responses
    # As chalice's CLI does: the stage's environment_variables go into os.environ before app.py is imported.
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    factory = CLIFactory(str(project_dir), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    app = config.chalice_app
    validate_routes(app.routes)
    server = create_local_server(app, config, host, port)
    server.server.RequestHandlerClass = functools.partial(
        _RequestHandler, app_object=app, config=config, responses=responses
    )
    # socketserver listens with a backlog of 5: a burst of clients (the
    # duplicate-POST chaos scenario, a load test) overflows it and the kernel
    # resets or drops their connects. Listening again only resizes the queue.
    server.server.socket.listen(LISTEN_BACKLOG)
    return server


def _loopback(host: str) -> str:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise argparse.ArgumentTypeError(f"{host!r}: the local API listens on a loopback address only")
    return host


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.api_server", description=__doc__)
    parser.add_argument("--host", type=_loopback, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="local", help="a stage of .chalice/config.json (default local)")
    parser.add_argument(
        "--project-dir", type=Path, default=REPO_ROOT, help="the Chalice project to serve (default: this repository)"
    )
    args = parser.parse_args(argv)
    # As `chalice local` does: the app's and the handlers' log lines on stdout.
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    server = create_server(args.host, args.port, args.stage, args.project_dir.resolve())
    # serve_forever() on a thread of its own: shutdown() must come from another thread.
    serving = threading.Thread(target=server.serve_forever, name="api-server", daemon=True)
    serving.start()
    while not stopping.wait(0.5):
        if not serving.is_alive():
            return 1
    server.shutdown()
    server.server.server_close()
    serving.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
