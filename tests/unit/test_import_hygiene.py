"""Each Lambda function imports only what it needs: what importing app, and each handler's path, must leave out.

Every function's handler lives in app.py, so whatever app.py imports at the
top, every function pays for on its cold start (bench/cold_start.py measures
it). Each check runs in a fresh interpreter: this test process has long
imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where a process runs, for Powertools: cleared so each check states its own.
PLACEMENT_VARIABLES = ("LAMBDA_TASK_ROOT", "AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE", "POWERTOOLS_TRACE_DISABLED")

# What only some functions need, and the heavy reason why each is kept out.
PYDANTIC = ("pydantic", "pydantic_core", "pydantic_settings")  # request models, the feed message
API_ONLY = ("chalicelib.entrypoints.http", "chalicelib.entrypoints.request_models", "swagger_ui_bundle", "stdnum")
DOCS_ONLY = ("chalicelib.entrypoints.openapi", "chalicelib.entrypoints.docs_page", "swagger_ui_bundle")
CONSUMERS_ONLY = ("aws_lambda_powertools.utilities.batch",)  # placement and executions
BOTO3 = ("boto3", "s3transfer")  # no function's: its SQS clients are botocore's, as PynamoDB's are
TRACING_ONLY = ("aws_xray_sdk",)


def imported_by(code: str, environment: Mapping[str, str] | None = None) -> set[str]:
    """The modules a fresh interpreter has loaded after running `code` (tracing off unless the environment says)."""
    env = {name: value for name, value in os.environ.items() if name not in PLACEMENT_VARIABLES}
    env.update(environment or {})
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def loaded(modules: set[str], *packages: str) -> list[str]:
    return sorted(name for name in packages if name in modules)


def test_importing_app_imports_no_entrypoint_any_function_does_without() -> None:
    modules = imported_by("import app")
    assert loaded(modules, *PYDANTIC, *API_ONLY, *DOCS_ONLY, *CONSUMERS_ONLY, *BOTO3, *TRACING_ONLY) == []
    assert "chalicelib.entrypoints.auth" in modules  # the authorizer is registered at import (the probe works)


def test_the_authorizers_first_call_needs_neither_pydantic_nor_boto3() -> None:
    # No key: refused without a DynamoDB call, but after the production dependencies are built.
    modules = imported_by(
        "import app\n"
        "event = {'type': 'REQUEST', 'methodArn': 'arn:aws:execute-api:us-east-1:1:a/api/GET/orders', 'headers': {}}\n"
        "answer = app.api_key_authorizer(event, None)\n"
        "assert answer['policyDocument']['Statement'][0]['Effect'] == 'Deny', answer"
    )
    assert loaded(modules, *PYDANTIC, *API_ONLY, *DOCS_ONLY, *CONSUMERS_ONLY, *BOTO3) == []
    assert "chalicelib.bootstrap" in modules


def test_placement_and_the_sweep_do_without_the_apis_models_and_docs() -> None:
    for entrypoint in ("orders_queue", "sweep"):
        modules = imported_by(f"import app\nimport chalicelib.entrypoints.{entrypoint}")
        assert loaded(modules, *PYDANTIC, *API_ONLY, *DOCS_ONLY) == [], entrypoint


def test_the_order_stream_functions_do_without_the_apis_models_and_docs() -> None:
    # $connect runs on every WebSocket handshake: it checks a key, and validates no request model.
    modules = imported_by("import app\nimport chalicelib.entrypoints.stream")
    assert loaded(modules, *PYDANTIC, *API_ONLY, *DOCS_ONLY, *CONSUMERS_ONLY, *BOTO3) == []
    # The events' JSON is the API's (pydantic models), but not its routes or its docs.
    modules = imported_by("import app\nimport chalicelib.entrypoints.order_stream")
    assert loaded(modules, *DOCS_ONLY, *BOTO3, "chalicelib.entrypoints.http") == []


def test_a_queue_client_comes_from_botocore_without_boto3() -> None:
    modules = imported_by(
        "import app\n"
        "from chalicelib import bootstrap\n"
        "client = bootstrap.production().orders_queue.client\n"
        "assert client.meta.service_model.service_name == 'sqs'",
        {"AWS_DEFAULT_REGION": "us-east-1"},
    )
    assert loaded(modules, *BOTO3) == []
    assert "botocore.client" in modules


def test_the_api_does_without_batch_processing_and_the_docs_until_asked_for_them() -> None:
    modules = imported_by("import app\nimport chalicelib.entrypoints.http")
    assert loaded(modules, *CONSUMERS_ONLY, *DOCS_ONLY) == []
    assert "pydantic" in modules  # it does validate requests with it


def test_in_lambda_the_functions_trace_botocore_and_pynamodb_only() -> None:
    modules = imported_by(
        "import app\nfrom chalicelib.observability import tracer\nassert not tracer.disabled",
        {"LAMBDA_TASK_ROOT": str(REPO_ROOT)},
    )
    assert "aws_xray_sdk.core" in modules
    assert "aws_xray_sdk.ext.botocore.patch" in modules
    assert "aws_xray_sdk.ext.pynamodb.patch" in modules
    # patch_all() would import these (installed here for the tests) to patch them.
    assert loaded(modules, "requests", "httpx", "aws_xray_sdk.ext.requests.patch") == []


ENVIRONMENTS = [
    {},
    {"LAMBDA_TASK_ROOT": "/var/task"},
    {"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"},
    {"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "0"},
    {"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "YES"},
    {"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"},
    {"LAMBDA_TASK_ROOT": "/var/task", "AWS_CHALICE_CLI_MODE": "true"},
    {"POWERTOOLS_TRACE_DISABLED": "false"},
]

AGREEMENT_PROBE = """
import json, os, sys
from aws_lambda_powertools.tracing.tracer import Tracer
from chalicelib.observability import tracing_enabled
answers = []
for environment in json.loads(sys.argv[1]):
    for name in {placement!r}:
        os.environ.pop(name, None)
    os.environ.update(environment)
    answers.append([tracing_enabled(), not Tracer._is_tracer_disabled()])
print(json.dumps(answers))
"""


def test_the_tracing_switch_agrees_with_powertools_own_rule() -> None:
    # Powertools' rule is private (Tracer._is_tracer_disabled): asked here, so an upgrade that changes it fails.
    code = AGREEMENT_PROBE.format(placement=PLACEMENT_VARIABLES)
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(ENVIRONMENTS)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert [ours for ours, _ in answers] == [theirs for _, theirs in answers]
    assert [ours for ours, _ in answers] == [False, True, False, True, False, False, False, False]
