"""Tooling fixtures: the stack packaged offline once per stage; the table the runner's fixture apps write to."""

from __future__ import annotations

import uuid

import boto3
import pytest

from tests.tooling.template_support import STAGES, Packaged, package_stage


@pytest.fixture(scope="module", params=STAGES)
def packaged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Packaged:
    return package_stage(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def observations_table(aws_endpoint: str) -> str:
    """Where the runner's fixture apps record each delivery and batch (read with runner_support.observed)."""
    name = f"runner-obs-{uuid.uuid4().hex[:8]}"
    boto3.client("dynamodb").create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name
