"""Shared fixtures: one AWS emulator for the whole test session, real and over HTTP."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devstack.emulator import emulator_env, running_emulator


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """Endpoint URL of a running emulator; the environment points boto3 and PynamoDB at it."""
    with running_emulator() as endpoint:
        previous = {key: os.environ.get(key) for key in emulator_env(endpoint)}
        os.environ.update(emulator_env(endpoint))
        try:
            yield endpoint
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
