"""ops/usage_plans.py and ops/api_limits.py against an emulator's API Gateway over HTTP: the real request shapes
(includeValues, the keyId filter, the apiStages and throttle patch paths, the stage's method settings)."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest

from chalicelib.adapters.accounts_table import DynamoDBAccountRateLimits, account_record_class_for
from chalicelib.domain.rate_limits import RateLimit, default_usage_plan_name, usage_plan_name
from devstack import localstack
from ops import api_limits, rate_limits
from ops.aws import Aws
from ops.usage_plans import UsagePlans

pytestmark = pytest.mark.integration


@pytest.fixture
def apigateway(aws_endpoint: str) -> Any:
    if localstack.health(aws_endpoint) is not None:
        # `make test-localstack` starts LocalStack without API Gateway (its SERVICES: what the app's
        # adapters use); moto's API Gateway in `make test` checks these request shapes.
        pytest.skip("API Gateway is not among the services make test-localstack starts")
    return boto3.client("apigateway", endpoint_url=aws_endpoint)


@pytest.fixture
def store(adapter_stack: dict[str, str]) -> DynamoDBAccountRateLimits:
    return DynamoDBAccountRateLimits(account_record_class_for(adapter_stack["AccountsTableName"]))


def deployed_stage(apigateway: Any, rate: int, burst: int) -> str:
    """A REST API with a stage `api` throttled as infra/operations.yaml throttles the stack's; its id."""
    api_id = str(apigateway.create_rest_api(name=f"it-{uuid.uuid4().hex[:8]}")["id"])
    root = apigateway.get_resources(restApiId=api_id)["items"][0]["id"]
    apigateway.put_method(restApiId=api_id, resourceId=root, httpMethod="GET", authorizationType="NONE")
    apigateway.put_integration(restApiId=api_id, resourceId=root, httpMethod="GET", type="MOCK")
    apigateway.create_deployment(restApiId=api_id, stageName="api")
    apigateway.update_stage(
        restApiId=api_id,
        stageName="api",
        patchOperations=[
            {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": str(rate)},
            {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": str(burst)},
        ],
    )
    return api_id


def plan_named(apigateway: Any, name: str) -> dict[str, Any]:
    (plan,) = [plan for plan in apigateway.get_usage_plans(limit=500)["items"] if plan["name"] == name]
    return dict(plan)


def test_a_key_moves_onto_a_plan_left_from_an_earlier_api_and_back(
    apigateway: Any, store: DynamoDBAccountRateLimits
) -> None:
    prefix, account = f"it-{uuid.uuid4().hex[:8]}", f"acct-{uuid.uuid4().hex[:8]}"
    api_id = deployed_stage(apigateway, rate=100, burst=200)
    stage = {"apiId": api_id, "stage": "api"}
    apigateway.create_usage_plan(
        name=default_usage_plan_name(prefix), apiStages=[stage], throttle={"rateLimit": 10.0, "burstLimit": 50}
    )
    # Made for the stack before it was re-created: the old RestApi's stage.
    limit = RateLimit(20, 100)
    apigateway.create_usage_plan(
        name=usage_plan_name(prefix, limit),
        apiStages=[{"apiId": "oldapi1234", "stage": "api"}],
        throttle={"rateLimit": 20.0, "burstLimit": 100},
    )
    plans = UsagePlans(apigateway, prefix)
    aws = Aws(apigateway=apigateway)
    # The stage's throttle as API Gateway reports it (no web ACL on this stage).
    assert api_limits.read_bounds(aws.apigateway, None, plans.stack_stages()) == api_limits.ApiBounds(100.0, 200)

    rate_limits.set_and_show(account, (True, limit), store, plans)
    usage_key = store.get(account).usage_key
    assert usage_key is not None
    # The value came back (includeValue[s]): it is what the authorizer returns.
    assert apigateway.get_api_key(apiKey=usage_key.key_id, includeValue=True)["value"] == usage_key.value
    moved = plan_named(apigateway, usage_plan_name(prefix, limit))
    assert stage in moved["apiStages"]
    in_plans = apigateway.get_usage_plans(keyId=usage_key.key_id, limit=500)["items"]
    assert [plan["name"] for plan in in_plans] == [usage_plan_name(prefix, limit)]

    back = rate_limits.set_and_show(account, (True, None), store, UsagePlans(apigateway, prefix))
    in_plans = apigateway.get_usage_plans(keyId=usage_key.key_id, limit=500)["items"]
    assert [plan["name"] for plan in in_plans] == [default_usage_plan_name(prefix)]
    assert back["api_gateway"]["left_usage_plans"] == [usage_plan_name(prefix, limit)]


def test_a_plan_changed_by_hand_gets_its_limit_back_through_the_throttle_paths(
    apigateway: Any, store: DynamoDBAccountRateLimits
) -> None:
    prefix, account = f"it-{uuid.uuid4().hex[:8]}", f"acct-{uuid.uuid4().hex[:8]}"
    stage = {"apiId": deployed_stage(apigateway, rate=100, burst=200), "stage": "api"}
    apigateway.create_usage_plan(
        name=default_usage_plan_name(prefix), apiStages=[stage], throttle={"rateLimit": 10.0, "burstLimit": 50}
    )
    limit = RateLimit(30, 60)
    apigateway.create_usage_plan(
        name=usage_plan_name(prefix, limit), apiStages=[stage], throttle={"rateLimit": 999.0, "burstLimit": 1}
    )
    rate_limits.set_and_show(account, (True, limit), store, UsagePlans(apigateway, prefix))
    throttle = plan_named(apigateway, usage_plan_name(prefix, limit))["throttle"]
    assert (float(throttle["rateLimit"]), int(throttle["burstLimit"])) == (30.0, 60)
