"""The one place that turns a stack's CloudFormation outputs into the environment our settings are read from.

The functions get these variables from the template on AWS; everything that
runs our code against a stack it did not deploy itself (the local stack, the
benchmarks, the operator tool) sets them from the stack's outputs here.
"""

from __future__ import annotations

from collections.abc import Mapping

# Environment variable -> the Output of infra/resources.yaml holding its value. The names follow one rule
# (ORDERS_TABLE_NAME <- OrdersTableName), the one infra/build_template.py checks the deployed template by.
SETTING_OUTPUTS = {
    "ORDERS_TABLE_NAME": "OrdersTableName",
    "ORDERS_QUEUE_NAME": "OrdersQueueName",
    "ORDERS_DEAD_LETTER_QUEUE_NAME": "OrdersDeadLetterQueueName",
    "EXECUTIONS_STREAM_NAME": "ExecutionsStreamName",
    "EXECUTIONS_TABLE_NAME": "ExecutionsTableName",
    "EXECUTIONS_FAILED_QUEUE_NAME": "ExecutionsFailedQueueName",
    "API_KEYS_TABLE_NAME": "ApiKeysTableName",
    # Read by the feed bridge (feed_bridge/) and by the reconciler, which keeps its cursor there.
    "FEED_CHECKPOINTS_TABLE_NAME": "FeedCheckpointsTableName",
    # Per-account risk limits (the API function reads them, the operator tool writes them).
    "ACCOUNTS_TABLE_NAME": "AccountsTableName",
    # The venue credential (order entry and the feed's handshake).
    "EXCHANGE_CREDENTIAL_SECRET_NAME": "ExchangeCredentialSecretName",
    # Order events: the log clients page and replay, the WebSocket connections, and the orders
    # table's stream both are derived from (the runner maps it locally, as Lambda does on AWS).
    "ORDER_EVENTS_TABLE_NAME": "OrderEventsTableName",
    "STREAM_CONNECTIONS_TABLE_NAME": "StreamConnectionsTableName",
    # Where the orders table's stream consumer sets aside the records it can never process.
    "ORDER_EVENTS_FAILED_QUEUE_NAME": "OrderEventsFailedQueueName",
}
# Set from the stack when it has them: the orders table's stream ARN carries a label chosen when
# the stream is created, so a tool that knows the stack only by its names (ops/target.py) cannot
# spell it, and needs it no more than the API does: only the stream's consumer reads it (on AWS
# the template wires the mapping to the table's StreamArn; locally the runner takes it from here).
OPTIONAL_SETTING_OUTPUTS = {
    "ORDERS_TABLE_STREAM_ARN": "OrdersTableStreamArn",
}


class MissingStackOutputs(KeyError):
    """The stack lacks outputs a setting needs: it was not made from infra/resources.yaml, or not fully."""


def settings_environment(outputs: Mapping[str, str]) -> dict[str, str]:
    """The environment variables that point the settings at the stack with these outputs (other outputs ignored)."""
    missing = sorted(output for output in SETTING_OUTPUTS.values() if output not in outputs)
    if missing:
        raise MissingStackOutputs(f"the stack has no output {', '.join(missing)}")
    environment = {variable: outputs[output] for variable, output in SETTING_OUTPUTS.items()}
    environment.update(
        {variable: outputs[output] for variable, output in OPTIONAL_SETTING_OUTPUTS.items() if output in outputs}
    )
    return environment
