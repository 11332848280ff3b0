"""Which deployment the tool works on, and pointing this process's settings and boto3 at it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from chalicelib import bootstrap
from chalicelib.config import DEFAULT_PREFIX, get_settings
from chalicelib.stack_outputs import settings_environment
from devstack.emulator import emulator_env
from devstack.stack import RUNNING_STACK_FILE

LOCAL_STAGE = "local"
DEPLOYED_STAGES = ("dev", "prod")
STAGES = (LOCAL_STAGE, *DEPLOYED_STAGES)

# Longer than the request path's settings (chalicelib/config.py), which give
# up within seconds so the API stays fast: an operator would rather wait a
# little than see a transient error halfway through a redrive.
OPERATOR_AWS_SETTINGS = {"AWS_CONNECT_TIMEOUT_S": "3", "AWS_READ_TIMEOUT_S": "10", "AWS_MAX_ATTEMPTS": "3"}


class TargetError(Exception):
    """The chosen stage cannot be used as it is; the message says what to do."""


@dataclass(frozen=True)
class Target:
    """A stage and the names of its resources, all derived from one prefix as infra/resources.yaml does."""

    stage: str
    prefix: str
    endpoint_url: str | None  # an emulator; None means real AWS through boto3's credential chain

    @property
    def is_local(self) -> bool:
        return self.endpoint_url is not None

    @property
    def orders_table(self) -> str:
        return f"{self.prefix}-orders"

    @property
    def orders_queue(self) -> str:
        return f"{self.prefix}-orders"

    @property
    def orders_dlq(self) -> str:
        return f"{self.prefix}-orders-dlq"

    @property
    def executions_stream(self) -> str:
        return f"{self.prefix}-executions"

    @property
    def executions_table(self) -> str:
        return f"{self.prefix}-executions"

    @property
    def executions_failed_queue(self) -> str:
        return f"{self.prefix}-executions-failed"

    @property
    def api_keys_table(self) -> str:
        return f"{self.prefix}-api-keys"

    @property
    def feed_checkpoints_table(self) -> str:
        return f"{self.prefix}-feed-checkpoints"

    def stack_outputs(self) -> dict[str, str]:
        """This stage's stack's outputs (infra/resources.yaml) that name the resources settings point at."""
        return {
            "OrdersTableName": self.orders_table,
            "OrdersQueueName": self.orders_queue,
            "ExecutionsStreamName": self.executions_stream,
            "ExecutionsTableName": self.executions_table,
            "ExecutionsFailedQueueName": self.executions_failed_queue,
            "OrdersDeadLetterQueueName": self.orders_dlq,
            "ApiKeysTableName": self.api_keys_table,
            "FeedCheckpointsTableName": self.feed_checkpoints_table,
            "AccountsTableName": f"{self.prefix}-accounts",
            "ExchangeCredentialSecretName": f"{self.prefix}-exchange-credential",
            "OrderEventsTableName": f"{self.prefix}-order-events",
            "StreamConnectionsTableName": f"{self.prefix}-stream-connections",
            "OrderEventsFailedQueueName": f"{self.prefix}-order-events-failed",
        }

    def describe(self) -> str:
        where = self.endpoint_url or "AWS"
        return f"stage {self.stage} ({self.prefix}-*, {where})"


def select_target(stage: str, environ: Mapping[str, str]) -> Target:
    """The target of a --stage value; TargetError if the environment does not allow it."""
    if stage == LOCAL_STAGE:
        endpoint = environ.get("AWS_ENDPOINT_URL", "").strip()
        prefix = environ.get("RESOURCE_PREFIX", DEFAULT_PREFIX)
        if not endpoint and RUNNING_STACK_FILE.is_file():
            # Written by a running `make run`, which starts moto on a free port.
            running = json.loads(RUNNING_STACK_FILE.read_text())
            endpoint, prefix = running["endpoint_url"], running["resource_prefix"]
        if not endpoint:
            # `make run` starts moto on a free port unless AWS_ENDPOINT_URL is
            # set, so only the operator knows where the local stack listens.
            raise TargetError(
                "--stage local found no running `make run` and no AWS_ENDPOINT_URL: start the stack, or export "
                "the emulator's URL, e.g. AWS_ENDPOINT_URL=http://127.0.0.1:4566"
            )
        return Target(LOCAL_STAGE, prefix, endpoint)
    if stage in DEPLOYED_STAGES:
        if environ.get("AWS_ENDPOINT_URL"):
            # boto3 and PynamoDB would both follow it: refuse rather than work
            # on an emulator while the operator believes it is dev or prod.
            raise TargetError(
                f"--stage {stage} talks to AWS, but AWS_ENDPOINT_URL={environ['AWS_ENDPOINT_URL']} is set; "
                "unset it (or use --stage local)"
            )
        return Target(stage, f"brokerage-{stage}", None)
    raise TargetError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")


def configure_environment(target: Target, environ: MutableMapping[str, str] | None = None) -> None:
    """Point chalicelib's Settings, hence every bootstrap adapter, and boto3 at the target."""
    env = os.environ if environ is None else environ
    env.update(settings_environment(target.stack_outputs()))
    for name, value in OPERATOR_AWS_SETTINGS.items():
        env.setdefault(name, value)
    if target.endpoint_url is None and env.get("AWS_REGION"):
        # Lambda and deploy.mk go by AWS_REGION; boto3 outside Lambda only
        # reads AWS_DEFAULT_REGION (or the profile).
        env.setdefault("AWS_DEFAULT_REGION", env["AWS_REGION"])
    if target.endpoint_url is not None:
        # The emulator's fake credentials, always: a real ~/.aws profile must
        # never be used against (or leak to) a local endpoint.
        env.update(emulator_env(target.endpoint_url))
    # Settings and adapters are built once per process on first use; forget
    # any built before, so nothing keeps pointing at another target.
    get_settings.cache_clear()
    for value in vars(bootstrap).values():
        cache_clear = getattr(value, "cache_clear", None)
        if callable(cache_clear):
            cache_clear()
