"""Per-account rate limits in the packaged stack (issue 17): the API's key source, every authorized method needing the
key usage plans count, the default limit's plan, the 429 gateway responses, the per-address WAF rule and its
condition, and the operator's grants on API Gateway."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from chalicelib.config import setting_names
from chalicelib.domain.rate_limits import DEFAULT_BURST, DEFAULT_RATE, default_usage_plan_name
from tests.tooling.template_support import (
    HANDLERS,
    Packaged,
    build_template,
    function_id,
    grants,
    key,
    load_infra_script,
    resolve_sub,
)
from tests.tooling.test_package_stream import references

pytestmark = pytest.mark.integration

rate_limit_template = load_infra_script("rate_limit_template")

CONDITION = "DeployWebAcl"
# A stack id as CloudFormation makes them: .../stack/<name>/<uuid>.
ACCOUNT_ID = "123456789012"
STACK_UUID = "4a1b2c3d-5e6f-7081-92a3-b4c5d6e7f809"
STACK_ID = f"arn:aws:cloudformation:eu-west-1:{ACCOUNT_ID}:stack/brokerage-orders-dev/{STACK_UUID}"


def of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == resource_type}


def body(packaged: Packaged) -> dict[str, Any]:
    return dict(packaged.resources["RestAPI"]["Properties"]["DefinitionBody"])


def test_the_usage_identifier_comes_from_the_authorizer_in_the_deployed_api(packaged: Packaged) -> None:
    assert body(packaged)["x-amazon-apigateway-api-key-source"] == "AUTHORIZER"
    (rest_api,) = of_type(packaged.expanded, "AWS::ApiGateway::RestApi").values()
    assert rest_api["Properties"]["Body"]["x-amazon-apigateway-api-key-source"] == "AUTHORIZER"


def test_every_method_behind_the_authorizer_requires_the_api_key_and_no_other_does(packaged: Packaged) -> None:
    # A usage plan throttles only methods that require an API key.
    definition = body(packaged)
    assert definition["securityDefinitions"]["api_key"] == {"type": "apiKey", "name": "x-api-key", "in": "header"}
    operations = [
        (path, method, operation)
        for path, methods in definition["paths"].items()
        for method, operation in methods.items()
        if isinstance(operation, dict) and "x-amazon-apigateway-integration" in operation
    ]
    authorized = {(p, m) for p, m, op in operations if {build_template.AUTHORIZER: []} in op.get("security", [])}
    keyed = {(p, m) for p, m, op in operations if {"api_key": []} in op.get("security", [])}
    assert ("/orders", "post") in authorized
    assert keyed == authorized
    assert ("/openapi.json", "get") not in keyed


def test_the_stacks_usage_plan_is_the_default_limits_on_the_apis_stage(packaged: Packaged) -> None:
    (plan,) = of_type(packaged.template, "AWS::ApiGateway::UsagePlan").values()
    properties = plan["Properties"]
    assert properties["Throttle"] == {"RateLimit": DEFAULT_RATE, "BurstLimit": DEFAULT_BURST}
    assert "Quota" not in properties
    assert properties["ApiStages"] == [{"ApiId": {"Ref": "RestAPI"}, "Stage": {"Ref": "RestAPI.Stage"}}]
    # The name ops/usage_plans.py finds it by (and copies its stage from).
    name = resolve_sub(properties["UsagePlanName"], packaged.template["Parameters"])
    assert name == default_usage_plan_name(packaged.template["Parameters"]["ResourcePrefix"]["Default"])


def test_over_the_limit_the_answer_is_a_json_429_with_retry_after(packaged: Packaged) -> None:
    responses = body(packaged)["x-amazon-apigateway-gateway-responses"]
    throttled = responses["THROTTLED"]
    assert throttled["statusCode"] == 429
    assert throttled["responseParameters"] == {"gatewayresponse.header.Retry-After": "'1'"}
    assert json.loads(throttled["responseTemplates"]["application/json"])["message"].startswith("Too many requests: ")
    quota = responses["QUOTA_EXCEEDED"]
    assert quota["statusCode"] == 429
    assert json.loads(quota["responseTemplates"]["application/json"])["message"].startswith("Too many requests: ")


def test_a_waf_rule_limits_each_source_address_in_front_of_the_stage(packaged: Packaged) -> None:
    parameters, conditions = packaged.template["Parameters"], packaged.template["Conditions"]
    assert parameters["WebAcl"]["Default"] == "enabled"
    assert parameters["WebAcl"]["AllowedValues"] == ["enabled", "disabled"]
    assert conditions[CONDITION] == {"Fn::Equals": [{"Ref": "WebAcl"}, "enabled"]}
    (acl_id, acl), (association_id, association) = (
        *of_type(packaged.template, "AWS::WAFv2::WebACL").items(),
        *of_type(packaged.template, "AWS::WAFv2::WebACLAssociation").items(),
    )
    assert acl["Condition"] == association["Condition"] == CONDITION
    properties = acl["Properties"]
    assert properties["Scope"] == "REGIONAL"
    assert properties["DefaultAction"] == {"Allow": {}}
    (rule,) = properties["Rules"]
    statement = rule["Statement"]["RateBasedStatement"]
    assert statement["AggregateKeyType"] == "IP"
    assert statement["Limit"] == {"Ref": "WebAclRequestsPerAddress"}
    assert parameters["WebAclRequestsPerAddress"]["MinValue"] >= 10  # WAF's least rate limit
    response = rule["Action"]["Block"]["CustomResponse"]
    assert response["ResponseCode"] == 429
    assert {header["Name"] for header in response["ResponseHeaders"]} == {"Retry-After"}
    custom = properties["CustomResponseBodies"][response["CustomResponseBodyKey"]]
    assert custom["ContentType"] == "APPLICATION_JSON"
    assert json.loads(custom["Content"])["message"].startswith("Too many requests: ")
    # On the API's one stage, by reference: associated once the stage exists.
    assert association["Properties"]["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    arn = association["Properties"]["ResourceArn"]["Fn::Sub"]
    assert re.fullmatch(
        r"arn:\$\{AWS::Partition\}:apigateway:\$\{AWS::Region\}::/restapis/\$\{RestAPI\}"
        r"/stages/\$\{RestAPI\.Stage\}",
        arn,
    )
    (expanded,) = of_type(packaged.expanded, "AWS::WAFv2::WebACLAssociation").values()
    (stage_id,) = of_type(packaged.expanded, "AWS::ApiGateway::Stage")
    referenced = {name for name, _ in references(expanded["Properties"]["ResourceArn"]) if "::" not in name}
    assert referenced == {"RestAPI", stage_id}
    assert association_id == "ApiWebAclAssociation"


def test_nothing_outside_the_waf_condition_uses_what_is_under_it(packaged: Packaged) -> None:
    conditioned = {k for k, v in packaged.resources.items() if v.get("Condition") == CONDITION}
    assert conditioned == {"ApiWebAcl", "ApiWebAclAssociation"}
    for logical_id, resource in packaged.resources.items():
        if resource.get("Condition") != CONDITION:
            assert not {name for name, _ in references(resource)} & conditioned, logical_id
    for name, output in packaged.template["Outputs"].items():
        if {ref for ref, _ in references(output.get("Value"))} & conditioned:
            assert output.get("Condition") == CONDITION, name


def test_the_operator_may_manage_api_keys_and_usage_plans_and_nothing_else_of_api_gateway(packaged: Packaged) -> None:
    granted = {pair for pair in grants(packaged.template, "OperatorRole") if pair[0].startswith("apigateway:")}
    actions = {"apigateway:GET", "apigateway:POST", "apigateway:PATCH", "apigateway:DELETE"}
    paths = ["/apikeys", "/apikeys/*", "/usageplans", "/usageplans/*"]
    resources = {key({"Fn::Sub": f"arn:${{AWS::Partition}}:apigateway:${{AWS::Region}}::{p}"}) for p in paths}
    # And read the stage's throttle, which bounds an account's limit (ops/api_limits.py).
    stage = key({"Fn::Sub": "arn:${AWS::Partition}:apigateway:${AWS::Region}::/restapis/${RestAPI}/stages/*"})
    assert granted == {(action, resource) for action in actions for resource in resources} | {("apigateway:GET", stage)}


def test_the_operator_may_read_the_stages_web_acl_by_its_name(packaged: Packaged) -> None:
    granted = {pair for pair in grants(packaged.template, "OperatorRole") if pair[0].startswith("wafv2:")}
    (acl,) = of_type(packaged.template, "AWS::WAFv2::WebACL").values()
    name = resolve_sub(acl["Properties"]["Name"], packaged.template["Parameters"])
    ((action, resource),) = granted
    assert action == "wafv2:GetWebACL"
    arn = resolve_sub(json.loads(resource), packaged.template["Parameters"])
    assert re.fullmatch(rf"arn:aws:wafv2:[a-z0-9-]+:\d{{12}}:regional/webacl/{re.escape(name)}/\*", arn)


def fallback_value(packaged: Packaged) -> Any:
    return packaged.resources[rate_limit_template.FALLBACK_USAGE_KEY]["Properties"]["Value"]


def test_accounts_without_a_key_of_their_own_share_a_fallback_key_in_the_default_plan(packaged: Packaged) -> None:
    # Without it every such account's Allow lacks a usage identifier, which API Gateway answers with 403.
    (key_id, api_key), (_, plan_key) = (
        *of_type(packaged.template, "AWS::ApiGateway::ApiKey").items(),
        *of_type(packaged.template, "AWS::ApiGateway::UsagePlanKey").items(),
    )
    assert key_id == rate_limit_template.FALLBACK_USAGE_KEY
    assert "Condition" not in api_key and "Condition" not in plan_key
    assert api_key["Properties"]["Enabled"] is True
    assert "Value" in api_key["Properties"]  # what it deploys as: below
    assert plan_key["Properties"] == {
        "KeyId": {"Ref": key_id},
        "KeyType": "API_KEY",
        "UsagePlanId": {"Ref": "ApiUsagePlan"},
    }
    assert packaged.template["Outputs"]["FallbackUsageKeyId"] == {"Value": {"Ref": key_id}}


def test_the_authorizer_and_only_it_is_given_the_fallback_keys_value(packaged: Packaged) -> None:
    for handler in HANDLERS:
        variables = packaged.resources[function_id(handler)]["Properties"]["Environment"]["Variables"]
        if handler == build_template.AUTHORIZER:
            assert variables[rate_limit_template.FALLBACK_USAGE_KEY_VARIABLE] == fallback_value(packaged)
        else:
            assert rate_limit_template.FALLBACK_USAGE_KEY_VARIABLE not in variables, handler
    # The variable is the setting the authorizer reads.
    assert rate_limit_template.FALLBACK_USAGE_KEY_VARIABLE.lower() in setting_names()
    (expanded,) = [
        function
        for function in of_type(packaged.expanded, "AWS::Lambda::Function").values()
        if rate_limit_template.FALLBACK_USAGE_KEY_VARIABLE in function["Properties"]["Environment"]["Variables"]
    ]
    assert expanded["Properties"]["Environment"]["Variables"][
        rate_limit_template.FALLBACK_USAGE_KEY_VARIABLE
    ] == fallback_value(packaged)


def evaluate(value: Any, stack_id: str) -> Any:
    """The intrinsic functions of the fallback key's Value, as CloudFormation evaluates them."""
    if isinstance(value, list):
        return [evaluate(item, stack_id) for item in value]
    if not isinstance(value, dict):
        return value
    ((function, argument),) = value.items()
    if function == "Ref":
        return {"AWS::StackId": stack_id, "AWS::AccountId": ACCOUNT_ID}[argument]
    arguments = [evaluate(item, stack_id) for item in argument]
    if function == "Fn::Split":
        return arguments[1].split(arguments[0])
    if function == "Fn::Select":
        return arguments[1][arguments[0]]
    assert function == "Fn::Join"
    return arguments[0].join(arguments[1])


@pytest.mark.parametrize(
    ("stack_id", "deployed_as"),
    [
        # AWS: a UUID per stack.
        (STACK_ID, f"fallback{STACK_UUID.replace('-', '')}{ACCOUNT_ID}"),
        # LocalStack's CloudFormation (`make test-deploy`): 8 characters.
        (
            f"arn:aws:cloudformation:us-east-1:{ACCOUNT_ID}:stack/brokerage-orders-dev/a1b2c3d4",
            f"fallbacka1b2c3d4{ACCOUNT_ID}",
        ),
    ],
)
def test_the_value_deploys_as_20_or_more_letters_and_digits_new_with_every_stack(
    packaged: Packaged, stack_id: str, deployed_as: str
) -> None:
    value = evaluate(fallback_value(packaged), stack_id)
    assert value == deployed_as
    assert len(value) >= 20 and value.isalnum()  # API Gateway refuses a key value under 20 characters
