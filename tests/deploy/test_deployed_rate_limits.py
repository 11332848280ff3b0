"""The deployed per-account rate limits (issue 17): the stack's shared fallback API key, in the default limit's usage
plan, is the usage identifier the deployed authorizer gives an account without a key of its own.

As in test_deployed_stack.py, the authorizer is the deployed function, invoked
with the event API Gateway would send it (LocalStack community never calls
authorizers itself): what is shown here is that the key's value, which
CloudFormation does not return, reaches the function, and that the key is in
the plan; that API Gateway then throttles by it only AWS shows (docs/deploy.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain.rate_limits import DEFAULT_BURST, DEFAULT_RATE
from chalicelib.service.accounts import create_api_key
from tests.deploy.support import DeployedStack, authorizer_event, effect_of, invoke

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(420)]


def test_an_account_without_a_key_of_its_own_is_allowed_on_the_stacks_fallback_key(
    deployed: DeployedStack, api_keys: Any
) -> None:
    apigateway = deployed.client("apigateway")
    fallback = apigateway.get_api_key(apiKey=deployed.outputs["FallbackUsageKeyId"], includeValue=True)
    assert fallback["enabled"] is True
    assert len(fallback["value"]) >= 20  # API Gateway's least key length
    # In the stack's own plan: the default limit.
    plan = apigateway.get_usage_plan(usagePlanId=deployed.outputs["ApiUsagePlanId"])
    assert (float(plan["throttle"]["rateLimit"]), int(plan["throttle"]["burstLimit"])) == (DEFAULT_RATE, DEFAULT_BURST)
    in_plan = apigateway.get_usage_plan_keys(usagePlanId=plan["id"])["items"]
    assert fallback["id"] in {key["id"] for key in in_plan}

    key = create_api_key("deploy-fallback", "deploy test", api_keys).plaintext
    result = invoke(
        deployed.client("lambda"),
        deployed.function_names["api_key_authorizer"],
        authorizer_event(deployed.api_id, {"Authorization": f"Bearer {key}"}),
    )
    assert result.function_error is None, result.payload
    assert effect_of(result.payload) == "Allow"
    assert result.payload["usageIdentifierKey"] == fallback["value"]
