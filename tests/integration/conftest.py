"""Integration fixtures: a stack of our own resources, provisioned from infra/ on the session's emulator."""

from __future__ import annotations

import uuid

import pytest

from devstack.provision import provision


@pytest.fixture(scope="session")
def adapter_stack(aws_endpoint: str) -> dict[str, str]:
    """Outputs of a stack with a unique prefix, so adapter tests share no table with anyone."""
    prefix = f"it-{uuid.uuid4().hex[:8]}"
    return provision(aws_endpoint, stack_name=prefix, parameters={"ResourcePrefix": prefix})
