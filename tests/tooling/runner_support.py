"""What the runner's tests share: the repository root, polling to a deadline, and a runner process with its record.

The fixture apps (runner_fixture_app.py, runner_kinesis_fixture_app.py) record
every invocation in a DynamoDB table; `observed` reads that record back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3

from devstack.processes import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
REPORT_FAILURES = {"function_response_types": ["ReportBatchItemFailures"]}
DEADLINE_S = 30.0
T = TypeVar("T")
# The role the runner names in the Kinesis fixture app's events (invokeIdentityArn); unit tests use it too.
ROLE_ARN = "arn:aws:iam::123456789012:role/runner-kinesis-fixture-dev"


def wait_for(probe: Callable[[], T | None], what: str, timeout_s: float = DEADLINE_S) -> T:
    """Poll until probe returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def observed(table: str, run_id: str, kind: str) -> list[dict[str, Any]]:
    """What the fixture app recorded, oldest first."""
    client = boto3.client("dynamodb")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "run_id = :r AND kind = :k",
        "ExpressionAttributeValues": {":r": {"S": run_id}, ":k": {"S": kind}},
    }
    while True:
        page = client.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    items.sort(key=lambda item: float(item["at"]["N"]))
    return [json.loads(item["data"]["S"]) for item in items]


@dataclass
class RunningRunner:
    process: ManagedProcess
    run_id: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
