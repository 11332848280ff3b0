"""The AWS emulator: a moto server on loopback, or the endpoint AWS_ENDPOINT_URL names."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config

from devstack.lifeline import Lifeline
from devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module

# Credentials and region for an emulator: fixed, fake, and set explicitly so
# that nothing on a developer's machine (a real ~/.aws profile) is ever used.
EMULATOR_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def emulator_env(endpoint_url: str) -> dict[str, str]:
    """Environment variables that point boto3 and PynamoDB at the emulator."""
    return {**EMULATOR_ENV, "AWS_ENDPOINT_URL": endpoint_url}


def emulator_client(service: str, endpoint_url: str, config: Config | None = None) -> Any:
    """A boto3 client for the emulator that uses the fake credentials whatever the environment says."""
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        config=config,
        region_name=EMULATOR_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=EMULATOR_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=EMULATOR_ENV["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=EMULATOR_ENV["AWS_SESSION_TOKEN"],
    )


def start_moto(port: int | None = None, lifeline: Lifeline | None = None) -> ManagedProcess:
    port = port or free_port()
    return ManagedProcess(
        "moto",
        python_module("devstack.moto_server", "-H", LOOPBACK, "-p", str(port)),
        ready_url=f"http://{LOOPBACK}:{port}/moto-api/",
        stdout=subprocess.DEVNULL,
        lifeline=lifeline,
    ).start()


@contextmanager
def running_emulator(lifeline: Lifeline | None = None) -> Iterator[str]:
    """Yield an endpoint URL: the user's AWS_ENDPOINT_URL if set, else a fresh moto server (watched by lifeline)."""
    external = os.environ.get("AWS_ENDPOINT_URL")
    if external:
        yield external
        return
    port = free_port()
    server = start_moto(port, lifeline)
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.stop()
