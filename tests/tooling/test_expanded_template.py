"""The template CloudFormation creates: `chalice package`'s SAM template expanded offline, checked statically.

cfn-lint 1.x checks a SAM template against SAM's schema only. What the SAM
transform makes of it (the event source mappings, the API's deployment and
stages, the functions with their roles) is expanded here as `make package`
expands it (infra/expand_template.py: aws-sam-translator, no account, no
network) and checked for what AWS would refuse or get wrong, in seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.tooling.template_support import (
    CHALICE_CONFIG,
    HANDLERS,
    NAME_PROPERTIES,
    REPO,
    Packaged,
    build_template,
    copy_project,
    function_id,
    getatt,
    grants,
    key,
    lint_findings,
    referenced_resource,
    resolve_sub,
    role_of,
)

pytestmark = pytest.mark.integration

SERVERLESS_RULES_CONFIG = REPO / "infra" / "cfn-lint-serverless.yaml"


def of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == resource_type}


def deployed_value(value: Any, parameters: dict[str, Any]) -> Any:
    """A literal, a Ref to a parameter (its default) or a Fn::Sub of parameters, as it deploys."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in parameters:
        return parameters[value["Ref"]]["Default"]
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        return resolve_sub(value, parameters)
    return value


def resource_names(template: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Logical id -> (type, name) of every table, queue and stream, named as the stage's parameters name it."""
    return {
        logical_id: (resource["Type"], deployed_value(resource["Properties"][name], template["Parameters"]))
        for logical_id, resource in template["Resources"].items()
        if (name := NAME_PROPERTIES.get(resource["Type"])) is not None
    }


def created_after(mapping_id: str, arn: Any, template: dict[str, Any]) -> str | None:
    """The resource of the template an ARN of a mapping names, if CloudFormation creates the mapping after it.

    By reference (Ref, GetAtt, `${X.Arn}`), or else by a DependsOn on the
    resource whose name the ARN ends with. None if neither: an ARN built from
    a name orders nothing, and the mapping may be created first.
    """
    referenced = referenced_resource(arn, template)
    if referenced is not None:
        return referenced
    depends_on = template["Resources"][mapping_id].get("DependsOn", [])
    waits_for = {depends_on} if isinstance(depends_on, str) else set(depends_on)
    named = re.split(r"[:/]", str(deployed_value(arn, template["Parameters"])))[-1]
    for logical_id, (_, name) in resource_names(template).items():
        if name == named and logical_id in waits_for:
            return logical_id
    return None


def mappings(template: dict[str, Any]) -> dict[str, tuple[str, str | None, str | None]]:
    """Function -> (mapping, resource it reads, on-failure destination) of every event source mapping."""
    found: dict[str, tuple[str, str | None, str | None]] = {}
    for mapping_id, mapping in of_type(template, "AWS::Lambda::EventSourceMapping").items():
        properties = mapping["Properties"]
        destination = properties.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        found[properties["FunctionName"]["Ref"]] = (
            mapping_id,
            created_after(mapping_id, properties["EventSourceArn"], template),
            None if destination is None else created_after(mapping_id, destination, template) or "not a resource",
        )
    return found


# --- Lint -----------------------------------------------------------------------------------


def test_cfn_lint_passes_on_the_expanded_template(packaged: Packaged) -> None:
    assert packaged.expanded["Resources"]  # expanded offline (infra/expand_template.py) with no credentials
    assert "Transform" not in packaged.expanded
    assert packaged.lint_findings[packaged.expanded_path] == []


def test_the_serverless_rules_pass_and_every_exception_to_them_is_still_needed(packaged: Packaged) -> None:
    # The rules' exceptions are on the resources (Metadata: cfn-lint), each
    # with its reason; infra/cfn-lint-serverless.yaml ignores what no resource
    # can pass. Without the exceptions the rules must find exactly what they
    # name: so the rules are loaded, and no exception outlives its reason.
    template = json.loads(json.dumps(packaged.template))
    excepted: set[str] = set()
    for logical_id, resource in template["Resources"].items():
        metadata = resource.get("Metadata", {})
        ignored = metadata.pop("cfn-lint", {}).get("config", {}).get("ignore_checks", [])
        excepted |= {f"{rule} {logical_id}" for rule in ignored}
    assert excepted, "no resource carries an exception"
    without = packaged.project / "build" / "sam-without-exceptions.json"
    without.write_text(json.dumps(template), encoding="utf-8")
    config = ("--config-file", str(SERVERLESS_RULES_CONFIG))
    findings = lint_findings(packaged, [packaged.sam_path, without], *config)
    assert findings[packaged.sam_path] == []
    # A finding reads "<rule> Resources/<logical id>/...: <message>".
    found = {" ".join(re.findall(r"^(\S+) Resources/([^/:]+)", finding)[0]) for finding in findings[without]}
    assert found == excepted, findings[without]


# --- Creation order: mappings after their sources -------------------------------------------------


def test_every_mapping_is_created_after_the_source_and_destination_it_names(packaged: Packaged) -> None:
    # CloudFormation creates what references nothing in parallel: a mapping
    # created before its queue or stream fails (Lambda: the source does not
    # exist), and the stack rolls back.
    found = mappings(packaged.expanded)
    assert {function: (source, destination) for function, (_, source, destination) in found.items()} == {
        "PlaceOrders": ("OrdersQueue", None),
        "ApplyExecutions": ("ExecutionsStream", "ExecutionsFailedQueue"),
        "PublishOrderEvents": ("OrdersTable", "OrderEventsFailedQueue"),
    }


def test_a_mapping_source_the_stage_does_not_name_fails_the_build(tmp_path: Path) -> None:
    copy_project(tmp_path)
    path = tmp_path / ".chalice" / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    del config["stages"]["dev"]["environment_variables"]["ORDERS_QUEUE_NAME"]
    path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(build_template.TemplateError, match="ORDERS_QUEUE_NAME"):
        build_template.build_template("dev", tmp_path)


# --- The API: one stage ------------------------------------------------------------------------------


def test_the_api_definition_names_its_version_and_the_api_is_traced(packaged: Packaged) -> None:
    properties = packaged.resources["RestAPI"]["Properties"]
    # Without OpenApiVersion SAM deploys the API to a second stage, `Stage`.
    # The definition's own version keeps SAM from rewriting it as OpenAPI 3.
    assert properties["OpenApiVersion"] == properties["DefinitionBody"]["swagger"] == "2.0"
    assert properties["TracingEnabled"] is CHALICE_CONFIG["stages"][packaged.stage]["xray"] is True


def test_the_api_has_one_stage_and_the_throttling_and_usage_plan_are_on_it(packaged: Packaged) -> None:
    expanded = packaged.expanded
    deployments = of_type(expanded, "AWS::ApiGateway::Deployment")
    # A deployment with a StageName creates that stage itself, beside the
    # template's own: SAM's `Stage`, outside the throttling and the usage plan.
    assert [deployment["Properties"].get("StageName") for deployment in deployments.values()] == [None]
    ((stage_id, stage),) = of_type(expanded, "AWS::ApiGateway::Stage").items()
    properties = stage["Properties"]
    assert properties["StageName"] == CHALICE_CONFIG["stages"][packaged.stage]["api_gateway_stage"]
    assert properties["DeploymentId"] == {"Ref": next(iter(deployments))}
    assert properties["RestApiId"] == {"Ref": "RestAPI"}
    assert properties["MethodSettings"] == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": {"Ref": "ApiThrottleRateLimit"},
            "ThrottlingBurstLimit": {"Ref": "ApiThrottleBurstLimit"},
        }
    ]
    assert properties["TracingEnabled"] is True
    plans = of_type(expanded, "AWS::ApiGateway::UsagePlan")
    assert [plan["Properties"]["ApiStages"] for plan in plans.values()] == [
        [{"ApiId": {"Ref": "RestAPI"}, "Stage": {"Ref": stage_id}}]
    ]


# --- Functions: permissions, names, tracing, logs -----------------------------------------------

# What the Lambda service does with the function's role for a mapping (AWS's
# AWSLambdaSQSQueueExecutionRole / AWSLambdaKinesisExecutionRole, on the one
# resource), and for an on-failure destination.
SOURCE_ACTIONS = {
    "AWS::SQS::Queue": {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
    },
    "AWS::Kinesis::Stream": {
        "kinesis:GetRecords",
        "kinesis:GetShardIterator",
        "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary",
        "kinesis:ListShards",
    },
    # AWSLambdaDynamoDBExecutionRole, on the table's stream (ListStreams: "*" only, below).
    "AWS::DynamoDB::Table": {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"},
}
# The attribute of a source that is the ARN the mapping reads.
SOURCE_ARN_ATTRIBUTE = {"AWS::DynamoDB::Table": "StreamArn"}
DESTINATION_ACTIONS = {"AWS::SQS::Queue": {"sqs:SendMessage"}}


def test_each_role_grants_what_its_mappings_and_destinations_need(packaged: Packaged) -> None:
    expanded = packaged.expanded
    found = mappings(expanded)
    assert set(found) == {function_id(handler) for handler in build_template.EVENT_SOURCE_KINDS}
    for function, (mapping_id, source, destination) in found.items():
        assert source is not None, mapping_id
        source_type = expanded["Resources"][source]["Type"]
        arn = getatt(source, SOURCE_ARN_ATTRIBUTE.get(source_type, "Arn"))
        needed = {(action, key(arn)) for action in SOURCE_ACTIONS[source_type]}
        if source_type == "AWS::DynamoDB::Table":
            needed.add(("dynamodb:ListStreams", key("*")))
        if destination is not None:
            actions = DESTINATION_ACTIONS[expanded["Resources"][destination]["Type"]]
            needed |= {(action, key(getatt(destination))) for action in actions}
        missing = needed - grants(expanded, role_of(expanded, function))
        assert missing == set(), f"{function}'s role lacks what {mapping_id} needs"


def test_sam_adds_no_role_and_no_permission(packaged: Packaged) -> None:
    # The roles are then exactly the ones test_package_iam.py holds against the
    # code and the IAM table: nothing granted that is not used.
    roles = of_type(packaged.expanded, "AWS::IAM::Role")
    assert roles == of_type(packaged.template, "AWS::IAM::Role")
    for function in of_type(packaged.expanded, "AWS::Lambda::Function"):
        assert role_of(packaged.expanded, function) in roles


# The kind of resource an environment variable names, by its suffix.
NAMED_KINDS = {
    "_TABLE_NAME": "AWS::DynamoDB::Table",
    "_QUEUE_NAME": "AWS::SQS::Queue",
    "_STREAM_NAME": "AWS::Kinesis::Stream",
    "_SECRET_NAME": "AWS::SecretsManager::Secret",
}


def test_every_resource_name_in_a_functions_environment_names_a_resource_of_the_template(packaged: Packaged) -> None:
    expanded = packaged.expanded
    names = set(resource_names(expanded).values())
    checked: set[str] = set()
    for logical_id, function in of_type(expanded, "AWS::Lambda::Function").items():
        for variable, value in function["Properties"]["Environment"]["Variables"].items():
            if not variable.endswith("_NAME"):
                continue
            kinds = [kind for suffix, kind in NAMED_KINDS.items() if variable.endswith(suffix)]
            assert kinds, f"{logical_id}: {variable} names a kind of resource this test does not know"
            assert (kinds[0], value) in names, f"{logical_id}: {variable}={value!r} is no {kinds[0]} of the template"
            checked.add(variable)
    environment = CHALICE_CONFIG["stages"][packaged.stage]["environment_variables"]
    assert checked == {variable for variable in environment if variable.endswith("_NAME")}


def test_every_function_is_traced_and_logs_to_its_own_group_with_the_stages_retention(packaged: Packaged) -> None:
    expanded = packaged.expanded
    parameters = expanded["Parameters"]
    retention = {
        deployed_value(group["Properties"]["LogGroupName"], parameters): group["Properties"].get("RetentionInDays")
        for group in of_type(expanded, "AWS::Logs::LogGroup").values()
    }
    functions = of_type(expanded, "AWS::Lambda::Function")
    assert set(functions) == {function_id(handler) for handler in HANDLERS}
    for logical_id, function in functions.items():
        properties = function["Properties"]
        assert properties["TracingConfig"] == {"Mode": "Active"}, logical_id
        group = "/aws/lambda/" + deployed_value(properties["FunctionName"], parameters)
        # Else Lambda creates the group on first write, and it keeps logs forever.
        assert group in retention, f"{logical_id}: no log group {group}"
        days = deployed_value(retention[group], parameters)
        assert days == CHALICE_CONFIG["stages"][packaged.stage]["log_retention_in_days"], logical_id


# --- Hardening (issue 15) --------------------------------------------------------------------

ACCOUNT_ROOT = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
DATA_KEY_ARN = {"Fn::GetAtt": ["DataKey", "Arn"]}
KEY_USE = {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:GenerateDataKey*", "kms:ReEncrypt*"}


def test_every_table_queue_stream_and_secret_is_encrypted_with_the_rotated_data_key(packaged: Packaged) -> None:
    expanded = packaged.expanded
    key = expanded["Resources"]["DataKey"]
    assert key["Type"] == "AWS::KMS::Key" and key["DeletionPolicy"] == "Retain"
    assert key["Properties"]["EnableKeyRotation"] is True
    tables = of_type(expanded, "AWS::DynamoDB::Table")
    assert {"OrdersTable", "ExecutionsTable", "ApiKeysTable", "AccountsTable", "FeedCheckpointsTable"} <= set(tables)
    for logical_id, table in tables.items():
        sse = table["Properties"]["SSESpecification"]
        assert sse == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": DATA_KEY_ARN}, logical_id
    queues = of_type(expanded, "AWS::SQS::Queue")
    assert len(queues) == 4
    for logical_id, queue in queues.items():
        assert queue["Properties"]["KmsMasterKeyId"] == {"Ref": "DataKey"}, logical_id
    (stream,) = of_type(expanded, "AWS::Kinesis::Stream").values()
    assert stream["Properties"]["StreamEncryption"] == {"EncryptionType": "KMS", "KeyId": DATA_KEY_ARN}
    (secret,) = of_type(expanded, "AWS::SecretsManager::Secret").values()
    assert secret["Properties"]["KmsKeyId"] == DATA_KEY_ARN
    assert "SecretString" not in secret["Properties"]  # generated, never written into the template


def test_the_data_key_is_used_only_by_the_stacks_roles_and_administered_by_the_account(packaged: Packaged) -> None:
    expanded = packaged.expanded
    statements = {s["Sid"]: s for s in expanded["Resources"]["DataKey"]["Properties"]["KeyPolicy"]["Statement"]}
    for statement in statements.values():
        assert statement["Effect"] == "Allow" and statement["Principal"] == {"AWS": ACCOUNT_ROOT}
        assert "kms:*" not in statement["Action"]
    # Administration without any use of the key, and no grants (a grant could hand out use).
    admin = set(statements["AccountAdministersTheKey"]["Action"])
    assert not admin & (KEY_USE | {"kms:CreateGrant"}) and "Condition" not in statements["AccountAdministersTheKey"]
    # Grants only for AWS resources (DynamoDB's for its tables).
    grants_statement = statements["ServicesCreateGrantsForTheirResources"]
    assert grants_statement["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": True}
    # The deployer may encrypt the secret through Secrets Manager, never decrypt.
    deployer = statements["DeployerStoresTheVenueCredential"]
    assert set(deployer["Action"]) == {"kms:Encrypt", "kms:GenerateDataKey"}
    assert deployer["Condition"]["StringEquals"]["kms:ViaService"] == {
        "Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"
    }
    # Use: exactly the functions' roles, the bridge's task role and the operator role, by name.
    users = statements["StackRolesUseTheKeyThroughTheirServices"]
    named = {resolve_sub(arn, expanded["Parameters"]) for arn in users["Condition"]["ArnEquals"]["aws:PrincipalArn"]}
    roles = {
        resolve_sub(role["Properties"]["RoleName"], expanded["Parameters"])
        for logical_id, role in of_type(expanded, "AWS::IAM::Role").items()
        if logical_id != "FeedBridgeExecutionRole"
    }
    assert named == {f"arn:aws:iam::123456789012:role/{name}" for name in roles}
    functions = of_type(expanded, "AWS::Lambda::Function").values()
    assert {role_of(expanded, fid) for fid in of_type(expanded, "AWS::Lambda::Function")} <= set(
        of_type(expanded, "AWS::IAM::Role")
    )
    assert len(roles) == len(list(functions)) + 2  # the functions', the bridge's task role, the operator's
    services = {
        resolve_sub(service, expanded["Parameters"]) for service in users["Condition"]["StringEquals"]["kms:ViaService"]
    }
    assert services == {f"{name}.us-east-1.amazonaws.com" for name in ("dynamodb", "sqs", "kinesis", "secretsmanager")}
    # The only statements with any use of the key are these two.
    using = {sid for sid, statement in statements.items() if set(statement["Action"]) & KEY_USE}
    assert using == {"DeployerStoresTheVenueCredential", "StackRolesUseTheKeyThroughTheirServices"}


def test_a_data_key_user_list_that_misses_a_role_fails_the_build(tmp_path: Path) -> None:
    copy_project(tmp_path)
    resources = tmp_path / "infra" / "resources.yaml"
    text = resources.read_text(encoding="utf-8")
    (line,) = [
        line
        for line in text.splitlines(keepends=True)
        if line.rstrip().endswith('role/${ResourcePrefix}-place-orders"')
    ]
    resources.write_text(text.replace(line, ""), encoding="utf-8")
    with pytest.raises(build_template.TemplateError, match="DataKey's users"):
        build_template.build_template("dev", root=tmp_path)


def test_every_function_reserves_concurrency_within_what_an_account_keeps_unreserved(packaged: Packaged) -> None:
    import dataclasses

    from chalicelib.config import Settings

    functions = of_type(packaged.expanded, "AWS::Lambda::Function")
    reserved = {fid: function["Properties"]["ReservedConcurrentExecutions"] for fid, function in functions.items()}
    assert all(isinstance(value, int) and value >= 1 for value in reserved.values()), reserved
    # AWS keeps 100 of an account's concurrency unreserved; 1,000 is the default limit.
    assert sum(reserved.values()) <= 1000 - 100
    # Placement's mapping may run as many batches as it reserves, no more (else Lambda throttles them).
    (default,) = [f.default for f in dataclasses.fields(Settings) if f.name == "placement_max_concurrency"]
    assert default == build_template.DEFAULT_PLACEMENT_MAX_CONCURRENCY
    environment = CHALICE_CONFIG["stages"][packaged.stage]["environment_variables"]
    mapping = int(environment.get("PLACEMENT_MAX_CONCURRENCY", default))
    assert reserved[function_id("place_orders")] >= mapping
    # The routes cannot take what placement, executions and the authorizer need: each has its own.
    assert reserved[function_id("api_handler")] < sum(reserved.values())


def test_a_reservation_below_the_placement_mappings_concurrency_fails_the_build(tmp_path: Path) -> None:
    copy_project(tmp_path)
    config_path = tmp_path / ".chalice" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["lambda_functions"]["place_orders"]["reserved_concurrency"] = 10
    config_path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(build_template.TemplateError, match="maximum concurrency"):
        build_template.build_template("dev", root=tmp_path)


VENUE_URLS = {
    "ExchangeUrl": (
        [
            "https://exchange.example/",
            "https://uat.exchange.example:8443/v1",
            "http://127.0.0.1:8001/",
            "http://localhost:9/",
            "http://[::1]:80/",
        ],
        [
            "http://exchange.example/",
            "ws://127.0.0.1/",
            "http://127.0.0.1.evil.example/",
            "http://localhost@evil/",
            "https://",
            "wss://exchange.example/",
            "",
        ],
    ),
    "ExchangeFeedUrl": (
        ["", "wss://feed.example/feed", "ws://127.0.0.1:8002/feed", "ws://localhost/"],
        ["ws://feed.example/", "https://feed.example/", "ws://10.0.0.1/", "wss://"],
    ),
}


@pytest.mark.parametrize("parameter", sorted(VENUE_URLS))
def test_venue_urls_must_be_tls_but_to_a_loopback_host(packaged: Packaged, parameter: str) -> None:
    spec = packaged.expanded["Parameters"][parameter]
    accepted, refused = VENUE_URLS[parameter]
    for url in accepted:
        assert re.fullmatch(spec["AllowedPattern"], url), url
    for url in refused:
        assert not re.fullmatch(spec["AllowedPattern"], url), url
    assert "loopback" in spec["ConstraintDescription"]


def test_quarantined_execution_reports_raise_an_alarm(packaged: Packaged) -> None:
    alarm = packaged.expanded["Resources"]["ExecutionReportsQuarantinedAlarm"]["Properties"]
    corrected = packaged.expanded["Resources"]["OrdersCorrectedAlarm"]["Properties"]
    assert alarm["MetricName"] == "ExecutionReportsQuarantined"
    # The same namespace and dimension Powertools gives every metric of ours.
    assert (alarm["Namespace"], alarm["Dimensions"]) == (corrected["Namespace"], corrected["Dimensions"])
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == ("Sum", 0, "GreaterThanThreshold")
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
