"""A stand-in for the Lambda runtime's context object, complete enough for Powertools and Chalice."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

DEFAULT_ACCOUNT = "123456789012"  # moto's default account, so ARNs match the emulator's
DEFAULT_REGION = "us-east-1"
DEFAULT_MEMORY_MB = 128  # Chalice's default lambda_memory_size
DEFAULT_TIMEOUT_S = 60.0  # Chalice's default lambda_timeout


@dataclass(frozen=True)
class CognitoIdentity:
    """Always empty outside a mobile-SDK invocation, as on Lambda."""

    cognito_identity_id: str | None = None
    cognito_identity_pool_id: str | None = None


@dataclass(frozen=True)
class FunctionSpec:
    """What stays the same across invocations of one function: the Lambda configuration."""

    function_name: str
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = DEFAULT_MEMORY_MB
    timeout_s: float = DEFAULT_TIMEOUT_S
    region: str = DEFAULT_REGION
    account: str = DEFAULT_ACCOUNT
    # The execution role; empty means one named after the function. Chalice
    # deploys one shared role named `<app>-<stage>` unless told otherwise.
    role_name: str = ""

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{self.function_name}"

    @property
    def role_arn(self) -> str:
        """The execution role's ARN: stream events carry it as invokeIdentityArn."""
        return f"arn:aws:iam::{self.account}:role/{self.role_name or self.function_name}"

    def new_context(self) -> LambdaContext:
        """A context for one invocation: fresh request id, deadline from now."""
        return LambdaContext(self)


@dataclass
class LambdaContext:
    """The attributes and method of the Python runtime's context object, one per invocation.

    The log stream name imitates Lambda's `YYYY/MM/DD/[$LATEST]<hex>` so log
    lines look the same locally; the deadline is monotonic so that a clock
    change cannot make the remaining time jump.
    """

    spec: FunctionSpec
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    identity: CognitoIdentity = field(default_factory=CognitoIdentity)
    client_context: None = None
    tenant_id: str | None = None
    _deadline: float = field(init=False, repr=False)
    log_stream_name: str = field(init=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.spec.timeout_s
        day = time.strftime("%Y/%m/%d", time.gmtime())
        self.log_stream_name = f"{day}/[{self.spec.function_version}]{uuid.uuid4().hex}"

    @property
    def function_name(self) -> str:
        return self.spec.function_name

    @property
    def function_version(self) -> str:
        return self.spec.function_version

    @property
    def invoked_function_arn(self) -> str:
        return self.spec.invoked_function_arn

    @property
    def memory_limit_in_mb(self) -> str:
        # A string, as the real Python runtime (awslambdaric) reads it from
        # AWS_LAMBDA_FUNCTION_MEMORY_SIZE: code doing arithmetic on it without
        # int() breaks on Lambda, so it must break here too.
        return str(self.spec.memory_limit_in_mb)

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.spec.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the function timeout, never negative (Lambda reports 0 at the end)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))
