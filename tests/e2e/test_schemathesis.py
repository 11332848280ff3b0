"""Schemathesis against the running local stack, generating requests from the OpenAPI document it serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.stack import LocalStack

# moto_only: generated requests vs the API's validation and OpenAPI; the emulator is only storage.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "content_type_conformance",
    "response_headers_conformance",
]
# Per operation in the fuzzing phase (positive and negative cases); the
# examples and coverage phases add a fixed set of their own. Deterministic
# generation: CI sends the same requests on every run.
MAX_EXAMPLES = 30
# Every method the coverage phase may send to a path that does not declare it,
# except TRACE: `chalice local` (Python's http.server) answers TRACE with its
# own 501 before our app sees the request. No route of ours declares TRACE, so
# API Gateway never passes one to the function either.
UNEXPECTED_METHODS = ["get", "put", "post", "delete", "options", "patch"]
CONFIG = f"""
[generation]
deterministic = true

[phases.stateful]
# Needs links between operations, which the document does not declare.
enabled = false

[phases.coverage]
unexpected-methods = {json.dumps(UNEXPECTED_METHODS)}
"""


def test_generated_requests_get_only_documented_answers(stack: LocalStack, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    report = tmp_path / "report.json"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{stack.api_url}/openapi.json",
        "--url",
        stack.api_url,
        # As the demo account: every order route needs a key (the docs ignore it).
        "--header",
        f"Authorization: Bearer {stack.api_key}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    # Its own folder as the working directory: a failed run writes files there, not into the repository.
    # A developer's own SCHEMATHESIS_* settings must not change what is checked.
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCHEMATHESIS_")}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert result.returncode == 0, f"schemathesis found problems:\n{result.stdout}\n{result.stderr}"
    summary = json.loads(report.read_text())
    # Not vacuously green: every operation ran, with a fair number of cases.
    assert summary["complete"] is True
    assert summary["operations"]["tested"] == summary["operations"]["total"] >= 5
    assert summary["test_cases"]["generated"] >= 100
    assert summary["failures"] == [] and summary["errors"] == []
