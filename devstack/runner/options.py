"""The runner's options: polling pace, retry pauses, Lambda settings and where checkpoints and outputs live."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from devstack.lambda_context import DEFAULT_TIMEOUT_S
from devstack.runner.sqs import DEFAULT_WAIT_S

DEFAULT_CHECKPOINT_TABLE = "runner-checkpoints"
DEFAULT_STACK_NAME = "brokerage-local"  # devstack/stack.py names the stack after RESOURCE_PREFIX, this by default


@dataclass(frozen=True)
class RunnerOptions:
    max_sqs_concurrency: int | None = None  # caps each SQS mapping's maximum concurrency (small machines)
    schedule_interval_s: float | None = None
    # By handler name, before schedule_interval_s: the reconciler need not run as often as the sweep.
    schedule_intervals: Mapping[str, float] = field(default_factory=dict)
    function_timeout_s: float = DEFAULT_TIMEOUT_S
    stage: str = "dev"  # Chalice's default stage, so names match `chalice local` / `chalice deploy`
    poll_wait_s: int = DEFAULT_WAIT_S  # SQS long poll; a stop waits for it (devstack/runner/sqs.py says why)
    error_backoff_s: float = 1.0
    # Lambda polls a shard with nothing new about once a second (Kinesis and DynamoDB Streams shards alike).
    kinesis_idle_wait_s: float = 1.0
    shard_refresh_s: float = 5.0  # between ListShards / DescribeStream calls that look for new shards
    retry_backoff_s: float = 0.5  # first pause before retrying a failed stream batch; doubles per retry
    retry_backoff_max_s: float = 5.0
    checkpoint_table: str = DEFAULT_CHECKPOINT_TABLE
    stack_name: str = DEFAULT_STACK_NAME  # whose Outputs on_failure_destination_output names
