"""A Kinesis mapping's on-failure destination: the SQS queue a stack output names, where discarded records are told."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from devstack.runner.worker import SourceUnavailable

# One logger for the whole runner, as before it was a package: log filters and lines stay the same.
log = logging.getLogger("devstack.runner")


class FailureDestination:
    """An on-failure destination: the SQS queue whose ARN a CloudFormation stack output holds.

    Resolved on first use, not at start-up, so the runner may start before
    the stack is provisioned; a missing stack or output blocks only the
    shard that needs it, with a logged reason, until it appears.
    """

    def __init__(self, output_name: str, stack_name: str, cloudformation: Any, sqs: Any) -> None:
        self.output_name = output_name
        self.stack_name = stack_name
        self.cloudformation = cloudformation
        self.sqs = sqs
        self._queue_url: str | None = None
        self._lock = threading.Lock()

    def queue_url(self) -> str:
        with self._lock:
            if self._queue_url is None:
                arn = self._output_value()
                if ":sqs:" not in arn:
                    raise SourceUnavailable(f"{self.output_name}={arn}: only SQS queue destinations are emulated")
                # The queue name is the ARN's last segment (arn:aws:sqs:<region>:<account>:<name>).
                queue_name = re.split(r"[:/]", arn)[-1]
                self._queue_url = str(self.sqs.get_queue_url(QueueName=queue_name)["QueueUrl"])
                log.info("on-failure destination %s: %s", self.output_name, self._queue_url)
            return self._queue_url

    def _output_value(self) -> str:
        try:
            stacks = self.cloudformation.describe_stacks(StackName=self.stack_name)["Stacks"]
        except ClientError as exc:
            raise SourceUnavailable(f"stack {self.stack_name} (for {self.output_name}): {exc}") from exc
        outputs = {str(o["OutputKey"]): str(o["OutputValue"]) for stack in stacks for o in stack.get("Outputs", [])}
        if self.output_name not in outputs:
            raise SourceUnavailable(
                f"stack {self.stack_name} has no output {self.output_name} (it has {', '.join(sorted(outputs))})"
            )
        return outputs[self.output_name]

    def send(self, message: Mapping[str, Any]) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url(), MessageBody=json.dumps(message))
