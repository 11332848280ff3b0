"""The deployed stack end to end: API Gateway, the deployed functions, the SQS and Kinesis mappings, the schedule.

Every function here is the deployed one, run by LocalStack from the
deployment zip (devstack/localstack_lambda/): what it imports is what
`chalice package` bundled. See docs/deploy.md for what this shows and what
only AWS can.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import requests

from chalicelib.service.accounts import create_api_key, revoke_api_key
from tests.deploy.support import (
    DeployedStack,
    allowed_context,
    authorize,
    call_api,
    effect_of,
    invoke,
    proxy_event,
)
from tests.polling import wait_until

# The first test also waits for `make deploy` (its own limit: conftest.DEPLOY_TIMEOUT_S).
pytestmark = [pytest.mark.deploy, pytest.mark.timeout(420)]

ISIN = "DE0007164600"
MISSING_KEY = "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
INVALID_KEY = "Invalid or revoked API key"


def test_the_stack_has_one_api_stage_and_the_functions_run_the_deployed_configuration(
    deployed: DeployedStack,
) -> None:
    stages = deployed.client("apigateway").get_stages(restApiId=deployed.api_id)["item"]
    assert [stage["stageName"] for stage in stages] == ["api"]
    lambda_client = deployed.client("lambda")
    for handler, name in deployed.function_names.items():
        configuration = lambda_client.get_function_configuration(FunctionName=name)
        assert configuration["Runtime"] == "python3.11", handler
        variables = configuration["Environment"]["Variables"]
        # The template's parameter, not an edit of the deployed function.
        assert variables["EXCHANGE_URL"] == deployed.exchange_url, handler
        assert variables["ORDERS_TABLE_NAME"] == deployed.outputs["OrdersTableName"], handler
        assert variables["ACCOUNTS_TABLE_NAME"] == deployed.outputs["AccountsTableName"], handler
        assert variables["EXCHANGE_CREDENTIAL_SECRET_NAME"] == deployed.outputs["ExchangeCredentialSecretName"], handler
        # Reserved concurrency is not read back: LocalStack's CloudFormation does not apply
        # ReservedConcurrentExecutions (checked 2026-12-01); tests/tooling/test_expanded_template.py checks it.


def test_the_data_key_encrypts_the_tables_queues_and_venue_credential(deployed: DeployedStack) -> None:
    outputs = deployed.outputs
    key_arn = outputs["DataKeyArn"]
    kms = deployed.client("kms")
    assert kms.describe_key(KeyId=key_arn)["KeyMetadata"]["KeyManager"] == "CUSTOMER"
    assert kms.get_key_rotation_status(KeyId=key_arn)["KeyRotationEnabled"] is True
    key_id = kms.describe_key(KeyId=key_arn)["KeyMetadata"]["KeyId"]
    secret = deployed.client("secretsmanager").describe_secret(SecretId=outputs["ExchangeCredentialSecretName"])
    assert key_id in secret["KmsKeyId"]
    # The stream's StreamEncryption is not read back: LocalStack's CloudFormation leaves the stream
    # unencrypted (checked 2026-12-01); tests/tooling/test_expanded_template.py checks the template.
    sqs = deployed.client("sqs")
    for queue in ("OrdersQueueUrl", "OrdersDeadLetterQueueUrl", "ExecutionsFailedQueueUrl"):
        attributes = sqs.get_queue_attributes(QueueUrl=outputs[queue], AttributeNames=["KmsMasterKeyId"])["Attributes"]
        assert key_id in attributes.get("KmsMasterKeyId", ""), queue
    dynamodb = deployed.client("dynamodb")
    for table in ("OrdersTableName", "ExecutionsTableName", "ApiKeysTableName", "AccountsTableName"):
        description = dynamodb.describe_table(TableName=outputs[table])["Table"]
        assert description["SSEDescription"]["SSEType"] == "KMS", table
        assert key_id in description["SSEDescription"]["KMSMasterKeyArn"], table


def test_the_venue_refuses_order_entry_without_the_deployed_credential(
    exchange: tuple[str, str], venue_credential: str
) -> None:
    """The simulator the deployed functions place with demands the secret's value (so the order test authenticates)."""
    exchange_url, _ = exchange
    body = {"client_order_id": "deploy-no-credential", "instrument": ISIN, "side": "buy", "quantity": 1}
    for headers in ({}, {"Authorization": "Bearer not-the-credential"}):
        answer = requests.post(f"{exchange_url}/orders", json=body, headers=headers, timeout=5)
        assert answer.status_code == 401, (headers, answer.text)


def test_the_risk_limit_and_key_listing_indexes_and_the_quarantine_alarm_are_deployed(
    deployed: DeployedStack,
) -> None:
    dynamodb = deployed.client("dynamodb")
    orders = dynamodb.describe_table(TableName=deployed.outputs["OrdersTableName"])["Table"]
    assert "account-open-orders" in {index["IndexName"] for index in orders["GlobalSecondaryIndexes"]}
    keys = dynamodb.describe_table(TableName=deployed.outputs["ApiKeysTableName"])["Table"]
    assert "account-keys" in {index["IndexName"] for index in keys["GlobalSecondaryIndexes"]}
    prefix = deployed.outputs["OrdersTableName"].removesuffix("-orders")
    alarms = deployed.client("cloudwatch").describe_alarms(AlarmNames=[f"{prefix}-execution-reports-quarantined"])
    (alarm,) = alarms["MetricAlarms"]
    assert alarm["MetricName"] == "ExecutionReportsQuarantined"


def test_the_mappings_carry_the_settings_chalice_cannot_set(deployed: DeployedStack) -> None:
    """Partial batch responses and the on-failure destination, as infra/event_sources.json adds them."""
    lambda_client = deployed.client("lambda")

    def mapping(handler: str) -> dict[str, Any]:
        found = lambda_client.list_event_source_mappings(FunctionName=deployed.function_names[handler])
        assert len(found["EventSourceMappings"]) == 1, found
        return dict(found["EventSourceMappings"][0])

    placement = mapping("place_orders")
    assert placement["EventSourceArn"] == deployed.outputs["OrdersQueueArn"]
    assert placement["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    executions = mapping("apply_executions")
    assert executions["EventSourceArn"] == deployed.outputs["ExecutionsStreamArn"]
    assert executions["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert executions["BisectBatchOnFunctionError"] is True
    destination = executions["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == deployed.outputs["ExecutionsFailedQueueArn"]


def test_the_openapi_document_comes_through_api_gateway(deployed: DeployedStack) -> None:
    """A real proxy integration: API Gateway's own event reaches the deployed API function and its answer comes back."""
    url = f"{deployed.endpoint_url}/_aws/execute-api/{deployed.api_id}/api/openapi.json"
    response = requests.get(url, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert "/orders" in document["paths"]
    # Built from API Gateway's request context: the stage comes before every route.
    assert document["servers"] == [{"url": "/api"}]


def test_the_authorizer_allows_a_valid_key_for_its_account(deployed: DeployedStack, api_keys: Any) -> None:
    key = create_api_key("deploy-allow", "deploy test", api_keys).plaintext
    for headers in ({"Authorization": f"Bearer {key}"}, {"x-api-key": key}):
        decision = authorize(deployed, headers)
        assert effect_of(decision) == "Allow"
        assert decision["principalId"] == "deploy-allow"
        assert decision["context"]["account_id"] == "deploy-allow"


def test_the_authorizer_denies_missing_unknown_and_revoked_keys_with_our_messages(
    deployed: DeployedStack, api_keys: Any
) -> None:
    created = create_api_key("deploy-deny", "deploy test", api_keys)
    assert effect_of(authorize(deployed, {"x-api-key": created.plaintext})) == "Allow"
    revoke_api_key(created.key_id, api_keys)
    unknown = created.plaintext[:-4] + ("AAAA" if not created.plaintext.endswith("AAAA") else "BBBB")
    for headers, message in (
        ({}, MISSING_KEY),
        ({"Authorization": f"Bearer {unknown}"}, INVALID_KEY),
        ({"x-api-key": created.plaintext}, INVALID_KEY),
    ):
        decision = authorize(deployed, headers)
        assert effect_of(decision) == "Deny", headers
        assert decision["context"]["message"] == message, headers


def test_an_order_is_placed_through_the_sqs_mapping_and_filled_through_the_kinesis_mapping(
    deployed: DeployedStack, api_keys: Any, bridge: Any, exchange_record: Any
) -> None:
    key = create_api_key("deploy-orders", "deploy test", api_keys).plaintext
    context = allowed_context(authorize(deployed, {"Authorization": f"Bearer {key}"}))
    body = {"type": "market", "side": "buy", "instrument": ISIN, "quantity": 20}
    status, order = call_api(deployed, proxy_event(deployed.api_id, "POST", "/orders", body=body, authorizer=context))
    assert status == 201, order
    assert order["status"] == "pending"

    # LocalStack's SQS mapping calls the deployed place_orders, which sends it to the simulator.
    record = wait_until(lambda: (exchange_record(order["id"]) or {}).get("order"), timeout_s=90, interval_s=1)
    assert record["quantity"] == 20

    # The simulator's feed -> the bridge -> Kinesis -> LocalStack's mapping -> the deployed apply_executions.
    def filled() -> dict[str, Any] | None:
        event = proxy_event(deployed.api_id, "GET", "/orders/{order_id}", {"order_id": order["id"]}, authorizer=context)
        status, current = call_api(deployed, event)
        assert status == 200, current
        return current if current["status"] == "filled" else None

    final = wait_until(filled, timeout_s=120, interval_s=2)
    assert final["filled_quantity"] == 20
    event = proxy_event(
        deployed.api_id, "GET", "/orders/{order_id}/executions", {"order_id": order["id"]}, authorizer=context
    )
    status, listing = call_api(deployed, event)
    assert status == 200
    assert sum(execution["quantity"] for execution in listing["executions"]) == 20


def test_a_malformed_record_is_set_aside_on_the_failed_queue(deployed: DeployedStack) -> None:
    """The deployed apply_executions puts it there itself, with the reason; the mapping goes on.

    The mapping's own on-failure destination (a batch that keeps failing) is
    read back above; LocalStack does not bisect, so it is not driven here.
    """
    marker = f"poison-{time.time_ns()}"
    deployed.client("kinesis").put_record(
        StreamName=deployed.outputs["ExecutionsStreamName"], Data=f"not a report {marker}".encode(), PartitionKey=marker
    )
    sqs = deployed.client("sqs")
    queue_url = sqs.get_queue_url(QueueName=deployed.outputs["ExecutionsFailedQueueName"])["QueueUrl"]
    seen: list[dict[str, Any]] = []

    def arrived() -> dict[str, Any] | None:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            seen.append(json.loads(message["Body"]))
        return next((body for body in seen if body.get("partitionKey") == marker), None)

    failed = wait_until(arrived, timeout_s=90, interval_s=0.5)
    assert base64.b64decode(failed["data"]).decode() == f"not a report {marker}"
    assert failed["reason"]


def log_lines(deployed: DeployedStack, handler: str) -> list[str]:
    """Every line the deployed function has logged so far (LocalStack writes each invocation's to its log group)."""
    logs = deployed.client("logs")
    group = f"/aws/lambda/{deployed.function_names[handler]}"
    streams = logs.describe_log_streams(logGroupName=group).get("logStreams", [])
    return [
        line
        for stream in streams
        for event in logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"])["events"]
        for line in event["message"].splitlines()
    ]


def json_lines_with(deployed: DeployedStack, handler: str, text: str) -> list[dict[str, Any]]:
    """The function's JSON log lines (log records, EMF metrics) that contain text."""
    return [json.loads(line) for line in log_lines(deployed, handler) if text in line and line.lstrip().startswith("{")]


def metric_names(emf: dict[str, Any]) -> list[str]:
    return [entry["Name"] for entry in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]]


def test_the_schedule_runs_the_deployed_sweep(deployed: DeployedStack) -> None:
    """The rule fires every minute; the sweep's EMF metric line shows it ran through, not only started."""
    metric = wait_until(
        lambda: json_lines_with(deployed, "sweep_pending_orders", '"OrdersReenqueued"'), timeout_s=150, interval_s=5
    )[0]
    assert "OrdersReenqueued" in metric_names(metric)


def test_the_deployed_reconciler_runs_on_its_schedule_from_its_index_and_keeps_its_cursor(
    deployed: DeployedStack, exchange: tuple[str, str]
) -> None:
    """Invoked as its rule would (every 5 minutes, too rarely to wait for): it runs through, reading the index and
    writing its cursor by the names the deployed configuration gives, with no storage or exchange failure."""
    name = deployed.function_names["reconcile_orders"]
    function_arn = deployed.client("lambda").get_function_configuration(FunctionName=name)["FunctionArn"]
    events = deployed.client("events")
    (rule,) = events.list_rule_names_by_target(TargetArn=function_arn)["RuleNames"]
    assert events.describe_rule(Name=rule)["ScheduleExpression"] == "rate(5 minutes)"
    scheduled = {
        "version": "0",
        "id": "deploy-test",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:000000000000:rule/{rule}"],
        "detail": {},
    }

    result = invoke(deployed.client("lambda"), name, scheduled)

    assert result.function_error is None, result.payload
    # The handler answers nothing (a schedule has no caller); its run line and metrics say what it did.
    # (The rule may have fired a run of its own meanwhile: each is checked.)
    for run in wait_until(lambda: json_lines_with(deployed, "reconcile_orders", '"reconciler run"'), 60, 1):
        assert isinstance(run["checked"], int) and isinstance(run["repaired"], int), run
        assert "unavailable" not in run and "error" not in run, run
    metric = wait_until(lambda: json_lines_with(deployed, "reconcile_orders", '"OrdersReconciled"'), 60, 1)[0]
    assert "OrdersReconciled" in metric_names(metric)
    cursor = deployed.client("dynamodb").get_item(
        TableName=deployed.outputs["FeedCheckpointsTableName"],
        Key={"feed_id": {"S": "reconciler:orders"}},
        ConsistentRead=True,
    )
    assert cursor.get("Item", {}).get("position", {}).get("S"), cursor
