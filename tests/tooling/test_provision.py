"""infra/resources.yaml provisioned through devstack.provision on a real emulator server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from devstack.provision import TEMPLATE_PATH, ProvisionError, provision

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def unique(kind: str) -> str:
    """A fresh name: tests share one emulator with each other and with other suites."""
    return f"t{kind}-{uuid.uuid4().hex[:10]}"


def client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def prefix() -> str:
    return unique("prov")


@pytest.fixture
def stack_name(prefix: str) -> str:
    return f"{prefix}-stack"


def provision_stack(endpoint: str, stack_name: str, prefix: str, **parameters: int) -> dict[str, str]:
    values = {"ResourcePrefix": prefix, **{key: str(value) for key, value in parameters.items()}}
    return provision(endpoint, stack_name, values)


# --- resources as declared ----------------------------------------------------


def test_outputs_name_every_resource(aws_endpoint: str, stack_name: str, prefix: str) -> None:
    outputs = provision_stack(aws_endpoint, stack_name, prefix)

    assert outputs["OrdersTableName"] == f"{prefix}-orders"
    assert outputs["OrdersQueueName"] == f"{prefix}-orders"
    assert outputs["OrdersDeadLetterQueueName"] == f"{prefix}-orders-dlq"
    assert outputs["ExecutionsStreamName"] == f"{prefix}-executions"
    assert outputs["ApiKeysTableName"] == f"{prefix}-api-keys"
    # Host differs by emulator (moto answers with sqs.<region>.amazonaws.com),
    # the path always ends in the queue name.
    assert outputs["OrdersQueueUrl"].endswith(f"/{prefix}-orders")
    assert outputs["OrdersDeadLetterQueueUrl"].endswith(f"/{prefix}-orders-dlq")
    assert outputs["OrdersQueueArn"].endswith(f":{prefix}-orders")
    assert outputs["OrdersDeadLetterQueueArn"].endswith(f":{prefix}-orders-dlq")
    assert outputs["ExecutionsStreamArn"].endswith(f":stream/{prefix}-executions")


def test_table_has_the_sparse_sweep_and_reconcile_indexes_and_the_account_index(
    aws_endpoint: str, stack_name: str, prefix: str
) -> None:
    outputs = provision_stack(aws_endpoint, stack_name, prefix)

    table = client("dynamodb", aws_endpoint).describe_table(TableName=outputs["OrdersTableName"])["Table"]

    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert types == {
        "id": "S",
        "pending_shard": "N",
        "sweep_after": "S",
        "account_id": "S",
        "created_at": "S",
        "reconcile_shard": "N",
        "open_account_id": "S",
    }
    indexes = {index["IndexName"]: index for index in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"pending-sweep", "account-orders", "reconcile-orders", "account-open-orders"}
    assert indexes["pending-sweep"]["KeySchema"] == [
        {"AttributeName": "pending_shard", "KeyType": "HASH"},
        {"AttributeName": "sweep_after", "KeyType": "RANGE"},
    ]
    assert indexes["pending-sweep"]["Projection"]["ProjectionType"] == "KEYS_ONLY"
    assert indexes["account-orders"]["KeySchema"] == [
        {"AttributeName": "account_id", "KeyType": "HASH"},
        {"AttributeName": "created_at", "KeyType": "RANGE"},
    ]
    # A page of GET /orders comes from the index alone.
    assert indexes["account-orders"]["Projection"]["ProjectionType"] == "ALL"
    # The reconciler's: order ids by shard, in id order (its cursor is a shard and an id).
    assert indexes["reconcile-orders"]["KeySchema"] == [
        {"AttributeName": "reconcile_shard", "KeyType": "HASH"},
        {"AttributeName": "id", "KeyType": "RANGE"},
    ]
    assert indexes["reconcile-orders"]["Projection"]["ProjectionType"] == "KEYS_ONLY"
    # The open-orders limit counts an account's open orders here (only open orders carry the key).
    assert indexes["account-open-orders"]["KeySchema"] == [
        {"AttributeName": "open_account_id", "KeyType": "HASH"},
        {"AttributeName": "id", "KeyType": "RANGE"},
    ]
    assert indexes["account-open-orders"]["Projection"]["ProjectionType"] == "KEYS_ONLY"


def test_keys_table_has_the_account_index_and_the_accounts_table_exists(
    aws_endpoint: str, stack_name: str, prefix: str
) -> None:
    outputs = provision_stack(aws_endpoint, stack_name, prefix)
    dynamodb = client("dynamodb", aws_endpoint)

    keys = dynamodb.describe_table(TableName=outputs["ApiKeysTableName"])["Table"]
    indexes = {index["IndexName"]: index for index in keys["GlobalSecondaryIndexes"]}
    assert indexes["account-keys"]["KeySchema"] == [
        {"AttributeName": "account_id", "KeyType": "HASH"},
        {"AttributeName": "created_at", "KeyType": "RANGE"},
    ]
    assert indexes["account-keys"]["Projection"]["ProjectionType"] == "ALL"
    accounts = dynamodb.describe_table(TableName=outputs["AccountsTableName"])["Table"]
    assert outputs["AccountsTableName"] == f"{prefix}-accounts"
    assert accounts["KeySchema"] == [{"AttributeName": "account_id", "KeyType": "HASH"}]


def test_the_exchange_credential_secret_exists_with_a_random_value(
    aws_endpoint: str, stack_name: str, prefix: str
) -> None:
    # moto's CloudFormation skips AWS::SecretsManager::Secret; provision() creates it then.
    outputs = provision_stack(aws_endpoint, stack_name, prefix)
    secrets = client("secretsmanager", aws_endpoint)

    assert outputs["ExchangeCredentialSecretName"] == f"{prefix}-exchange-credential"
    value = secrets.get_secret_value(SecretId=outputs["ExchangeCredentialSecretName"])["SecretString"]
    assert len(value) >= 32
    assert value.isalnum()
    # A second provisioning keeps the value (the venue has been told it).
    provision_stack(aws_endpoint, stack_name, prefix)
    again = secrets.get_secret_value(SecretId=outputs["ExchangeCredentialSecretName"])["SecretString"]
    assert again == value


def test_queue_redrives_to_dead_letter_queue_after_max_attempts(
    aws_endpoint: str, stack_name: str, prefix: str
) -> None:
    outputs = provision_stack(
        aws_endpoint, stack_name, prefix, PlacementMaxAttempts=4, PlacementVisibilityTimeoutSeconds=90
    )
    sqs = client("sqs", aws_endpoint)

    attributes = sqs.get_queue_attributes(QueueUrl=outputs["OrdersQueueUrl"], AttributeNames=["All"])["Attributes"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=outputs["OrdersDeadLetterQueueUrl"], AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]

    redrive = json.loads(attributes["RedrivePolicy"])
    # AWS and moto answer 4, LocalStack "4" (the CloudFormation parameter's string).
    assert redrive == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": redrive["maxReceiveCount"]}
    assert int(redrive["maxReceiveCount"]) == 4
    assert dlq_arn == outputs["OrdersDeadLetterQueueArn"]
    assert attributes["VisibilityTimeout"] == "90"
    assert attributes["MessageRetentionPeriod"] == "1209600"


def test_stream_has_the_shard_count(aws_endpoint: str, stack_name: str, prefix: str) -> None:
    outputs = provision_stack(aws_endpoint, stack_name, prefix, ExecutionsShardCount=3)

    summary = client("kinesis", aws_endpoint).describe_stream_summary(StreamName=outputs["ExecutionsStreamName"])[
        "StreamDescriptionSummary"
    ]

    assert summary["OpenShardCount"] == 3
    assert summary["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert summary["RetentionPeriodHours"] == 24
    assert summary["StreamARN"] == outputs["ExecutionsStreamArn"]


def test_provisioning_twice_is_idempotent(aws_endpoint: str, stack_name: str, prefix: str) -> None:
    first = provision_stack(aws_endpoint, stack_name, prefix, PlacementMaxAttempts=5)
    second = provision_stack(aws_endpoint, stack_name, prefix, PlacementMaxAttempts=5)

    assert second == first
    (stack,) = client("cloudformation", aws_endpoint).describe_stacks(StackName=stack_name)["Stacks"]
    assert stack["StackStatus"] in {"CREATE_COMPLETE", "UPDATE_COMPLETE"}


# --- resources behave as the application relies on ---------------------------


def test_message_moves_to_dead_letter_queue_after_the_last_attempt(
    aws_endpoint: str, stack_name: str, prefix: str
) -> None:
    attempts = 3
    outputs = provision_stack(aws_endpoint, stack_name, prefix, PlacementMaxAttempts=attempts)
    sqs = client("sqs", aws_endpoint)
    queue, dlq = outputs["OrdersQueueUrl"], outputs["OrdersDeadLetterQueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody='{"order_id": "o-1"}')

    # Each receive is one placement attempt; visibility 0 makes the message
    # visible again at once, as a failed attempt's message eventually is.
    for attempt in range(1, attempts + 1):
        received = sqs.receive_message(
            QueueUrl=queue, VisibilityTimeout=0, MaxNumberOfMessages=1, AttributeNames=["ApproximateReceiveCount"]
        ).get("Messages", [])
        assert len(received) == 1, f"attempt {attempt} got no message"
        assert received[0]["Attributes"]["ApproximateReceiveCount"] == str(attempt)

    assert sqs.receive_message(QueueUrl=queue, VisibilityTimeout=0).get("Messages", []) == []
    dead = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", [])
    assert [message["Body"] for message in dead] == ['{"order_id": "o-1"}']


def test_pending_sweep_index_holds_only_pending_orders(aws_endpoint: str, stack_name: str, prefix: str) -> None:
    outputs = provision_stack(aws_endpoint, stack_name, prefix)
    dynamodb = client("dynamodb", aws_endpoint)
    table = outputs["OrdersTableName"]
    items: list[dict[str, int | str]] = [
        {"id": "due", "pending_shard": 1, "sweep_after": "2026-01-01T00:00:00Z"},
        {"id": "not-yet-due", "pending_shard": 1, "sweep_after": "2026-01-01T00:10:00Z"},
        {"id": "other-shard", "pending_shard": 0, "sweep_after": "2026-01-01T00:00:00Z"},
        {"id": "filled"},  # no index keys: not in the sparse index at all
    ]
    for item in items:
        dynamodb.put_item(
            TableName=table,
            Item={
                key: {"N": str(value)} if isinstance(value, int) else {"S": str(value)} for key, value in item.items()
            },
        )

    def due(shard: int) -> set[str]:
        page = dynamodb.query(
            TableName=table,
            IndexName="pending-sweep",
            KeyConditionExpression="pending_shard = :s AND sweep_after < :t",
            ExpressionAttributeValues={":s": {"N": str(shard)}, ":t": {"S": "2026-01-01T00:05:00Z"}},
        )
        return {item["id"]["S"] for item in page["Items"]}

    assert due(1) == {"due"}
    assert due(0) == {"other-shard"}
    scanned = dynamodb.scan(TableName=table, IndexName="pending-sweep")["Items"]
    assert {item["id"]["S"] for item in scanned} == {"due", "not-yet-due", "other-shard"}


def test_reconcile_index_holds_only_marked_orders_in_id_order_from_a_cursor(
    aws_endpoint: str, stack_name: str, prefix: str
) -> None:
    outputs = provision_stack(aws_endpoint, stack_name, prefix)
    dynamodb = client("dynamodb", aws_endpoint)
    table = outputs["OrdersTableName"]
    marked = {"o-3": 2, "o-1": 2, "o-2": 2, "o-4": 5}
    for order_id, shard in marked.items():
        dynamodb.put_item(TableName=table, Item={"id": {"S": order_id}, "reconcile_shard": {"N": str(shard)}})
    dynamodb.put_item(TableName=table, Item={"id": {"S": "o-closed"}})  # no reconcile_shard: never indexed

    def ids(shard: int, after: str = "") -> list[str]:
        # One page at a time, as a run with a bounded batch reads it; the cursor is the last id done.
        condition, values = "reconcile_shard = :s", {":s": {"N": str(shard)}}
        if after:
            condition, values = condition + " AND id > :after", {**values, ":after": {"S": after}}
        page = dynamodb.query(
            TableName=table,
            IndexName="reconcile-orders",
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            Limit=2,
        )
        # Keys only: the id (table key, index range key) and the shard, nothing else to go stale.
        assert all(set(item) == {"id", "reconcile_shard"} for item in page["Items"])
        return [item["id"]["S"] for item in page["Items"]]

    assert ids(2) == ["o-1", "o-2"]
    assert ids(2, after="o-2") == ["o-3"]
    assert ids(5) == ["o-4"]
    # An order leaving the reconciler's set drops its shard, and with it its index entry.
    dynamodb.update_item(TableName=table, Key={"id": {"S": "o-1"}}, UpdateExpression="REMOVE reconcile_shard")
    assert ids(2) == ["o-2", "o-3"]
    scanned = dynamodb.scan(TableName=table, IndexName="reconcile-orders")["Items"]
    assert {item["id"]["S"] for item in scanned} == {"o-2", "o-3", "o-4"}


# --- failures -----------------------------------------------------------------


def test_failed_stack_reports_the_reason(aws_endpoint: str, stack_name: str, prefix: str) -> None:
    dynamodb = client("dynamodb", aws_endpoint)
    dynamodb.create_table(
        TableName=f"{prefix}-orders",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    cloudformation = client("cloudformation", aws_endpoint)
    try:
        with pytest.raises(ProvisionError, match="already exists"):
            provision_stack(aws_endpoint, stack_name, prefix)
    finally:
        # moto leaves a failed stack in CREATE_IN_PROGRESS, and from then on
        # DescribeStacks without a name fails for everyone on this emulator.
        with contextlib.suppress(ClientError):
            cloudformation.delete_stack(StackName=stack_name)


@pytest.mark.parametrize(
    "parameters",
    [
        {"PlacementMaxAttempt": "5"},  # typo: moto would silently ignore it
        {"PlacementMaxAttempts": "0"},
        {"PlacementMaxAttempts": "three"},
        {"ResourcePrefix": "Brokerage_Local"},
    ],
)
def test_invalid_parameters_are_rejected_before_any_call(parameters: dict[str, str]) -> None:
    class NoCalls:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"unexpected CloudFormation call {name}")

    with pytest.raises(ProvisionError, match="invalid parameters"):
        provision(None, "never-created", parameters, cloudformation_client=NoCalls())


# --- the CLI ------------------------------------------------------------------


def test_cli_prints_outputs_from_any_working_directory(aws_endpoint: str, prefix: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "devstack.provision",
            "--endpoint-url",
            aws_endpoint,
            "--stack-name",
            f"{prefix}-cli",
            "--parameter",
            f"ResourcePrefix={prefix}",
            "--parameter",
            "ExecutionsShardCount=1",
        ],
        cwd=tmp_path,  # not the repo: the template path must not depend on the cwd
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout)
    assert outputs["ExecutionsStreamName"] == f"{prefix}-executions"
    assert outputs["OrdersTableName"] == f"{prefix}-orders"


# --- waiting, with a scripted client (moto finishes stacks synchronously) -----


class ScriptedCloudFormation:
    """Answers DescribeStacks with the given statuses in turn, like an asynchronous CloudFormation."""

    def __init__(self, statuses: list[str], events: list[dict[str, str]] | None = None, exists: bool = False) -> None:
        self.statuses = statuses
        self.events = events or []
        self.exists = exists
        self.calls: list[str] = []

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        self.calls.append("describe_stacks")
        if not self.exists:
            self.exists = True
            raise ClientError(
                {"Error": {"Code": "ValidationError", "Message": f"Stack with id {StackName} does not exist"}},
                "DescribeStacks",
            )
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {
            "Stacks": [
                {"StackName": StackName, "StackStatus": status, "Outputs": [{"OutputKey": "K", "OutputValue": "V"}]}
            ]
        }

    def create_stack(self, **kwargs: Any) -> None:
        self.calls.append("create_stack")

    def update_stack(self, **kwargs: Any) -> None:
        self.calls.append("update_stack")
        raise ClientError(
            {"Error": {"Code": "ValidationError", "Message": "No updates are to be performed."}}, "UpdateStack"
        )

    def describe_stack_events(self, StackName: str) -> dict[str, Any]:
        return {"StackEvents": self.events}


def test_waits_while_the_stack_is_in_progress() -> None:
    fake = ScriptedCloudFormation(["CREATE_IN_PROGRESS", "CREATE_IN_PROGRESS", "CREATE_COMPLETE"])

    assert provision(None, "s", cloudformation_client=fake, poll_interval_s=0) == {"K": "V"}
    assert fake.calls == ["describe_stacks", "create_stack", *["describe_stacks"] * 3]


def test_failure_names_the_failed_resources_of_this_operation_only() -> None:
    events = [  # newest first, as CloudFormation returns them
        {"ResourceType": "AWS::CloudFormation::Stack", "LogicalResourceId": "s", "ResourceStatus": "ROLLBACK_COMPLETE"},
        {
            "ResourceType": "AWS::SQS::Queue",
            "LogicalResourceId": "OrdersQueue",
            "ResourceStatus": "CREATE_FAILED",
            "ResourceStatusReason": "Resource creation cancelled",
        },
        {
            "ResourceType": "AWS::DynamoDB::Table",
            "LogicalResourceId": "OrdersTable",
            "ResourceStatus": "CREATE_FAILED",
            "ResourceStatusReason": "t-orders already exists",
        },
        {
            "ResourceType": "AWS::CloudFormation::Stack",
            "LogicalResourceId": "s",
            "ResourceStatus": "CREATE_IN_PROGRESS",
        },
        {
            "ResourceType": "AWS::Kinesis::Stream",
            "LogicalResourceId": "ExecutionsStream",
            "ResourceStatus": "DELETE_FAILED",
            "ResourceStatusReason": "from an earlier operation",
        },
    ]
    fake = ScriptedCloudFormation(["CREATE_IN_PROGRESS", "ROLLBACK_COMPLETE"], events)

    with pytest.raises(ProvisionError) as failure:
        provision(None, "s", cloudformation_client=fake, poll_interval_s=0)

    message = str(failure.value)
    assert "ROLLBACK_COMPLETE" in message
    assert message.index("OrdersTable CREATE_FAILED: t-orders already exists") < message.index("OrdersQueue")
    assert "earlier operation" not in message


def test_no_updates_to_perform_is_success() -> None:
    fake = ScriptedCloudFormation(["CREATE_COMPLETE"], exists=True)

    assert provision(None, "s", cloudformation_client=fake) == {"K": "V"}
    assert fake.calls == ["describe_stacks", "update_stack", "describe_stacks"]


@pytest.mark.parametrize("status", ["ROLLBACK_COMPLETE", "CREATE_FAILED"])
def test_a_stack_whose_creation_failed_is_not_updated(status: str) -> None:
    # AWS rolls a failed creation back; LocalStack leaves it in CREATE_FAILED and
    # answers an update with "No updates are to be performed", which would
    # otherwise count as success with the failed stack's (empty) outputs.
    fake = ScriptedCloudFormation([status], exists=True)

    with pytest.raises(ProvisionError, match="its creation failed"):
        provision(None, "s", cloudformation_client=fake)
    assert "update_stack" not in fake.calls


def test_times_out_on_a_stack_that_never_finishes() -> None:
    fake = ScriptedCloudFormation(["CREATE_IN_PROGRESS"])

    with pytest.raises(ProvisionError, match="still CREATE_IN_PROGRESS"):
        provision(None, "s", cloudformation_client=fake, timeout_s=0.05, poll_interval_s=0.01)


# --- the template itself --------------------------------------------------------


def test_template_passes_cfn_lint() -> None:
    # The entry point installed next to this interpreter, so the venv's pinned cfn-lint runs.
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    command = [str(cfn_lint)] if cfn_lint.exists() else [shutil.which("cfn-lint") or "cfn-lint"]
    result = subprocess.run([*command, str(TEMPLATE_PATH)], capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stdout + result.stderr


def test_template_protects_orders_the_emulator_cannot_check() -> None:
    # moto ignores DeletionPolicy and point-in-time recovery, so read them from the template.
    table = yaml.safe_load(TEMPLATE_PATH.read_text(encoding="utf-8"))["Resources"]["OrdersTable"]

    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"
    assert table["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
