"""Stack outputs -> settings environment: one mapping, checked against the template, the settings and the ops tool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from chalicelib.config import setting_names
from chalicelib.stack_outputs import (
    OPTIONAL_SETTING_OUTPUTS,
    SETTING_OUTPUTS,
    MissingStackOutputs,
    settings_environment,
)
from ops.target import Target, configure_environment

pytestmark = pytest.mark.unit

RESOURCES = yaml.safe_load((Path(__file__).resolve().parents[2] / "infra" / "resources.yaml").read_text("utf-8"))
NAME_PROPERTIES = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::Kinesis::Stream": "Name",
    "AWS::SecretsManager::Secret": "Name",
}
OUTPUTS = {output: f"value-of-{output}" for output in SETTING_OUTPUTS.values()}


def template_name(output: str, prefix: str) -> str:
    """The resource name an Output of resources.yaml gives for this ResourcePrefix."""
    value: dict[str, Any] = RESOURCES["Outputs"][output]["Value"]
    if "Fn::Sub" in value:  # a secret's name (its Ref is its ARN): the Output spells the name out
        sub: str = value["Fn::Sub"]
        return sub.replace("${ResourcePrefix}", prefix)
    logical_id = value["Ref"] if "Ref" in value else value["Fn::GetAtt"][0]
    resource = RESOURCES["Resources"][logical_id]
    pattern: str = resource["Properties"][NAME_PROPERTIES[resource["Type"]]]["Fn::Sub"]
    return pattern.replace("${ResourcePrefix}", prefix)


def test_each_setting_takes_its_value_from_the_output_of_the_same_name() -> None:
    environment = settings_environment({**OUTPUTS, "OrdersQueueUrl": "http://ignored"})
    assert environment == {variable: f"value-of-{output}" for variable, output in SETTING_OUTPUTS.items()}
    for variable, output in SETTING_OUTPUTS.items():
        assert output in RESOURCES["Outputs"], output
        # The rule infra/build_template.py checks the deployed functions' environment by.
        assert "".join(word.capitalize() for word in variable.split("_")) == output


def test_an_optional_output_is_taken_when_the_stack_has_it_and_only_then() -> None:
    (variable, output), *_ = OPTIONAL_SETTING_OUTPUTS.items()
    assert output in RESOURCES["Outputs"]
    assert "".join(word.capitalize() for word in variable.split("_")) == output
    assert variable not in settings_environment(OUTPUTS)
    assert settings_environment({**OUTPUTS, output: "arn:stream"})[variable] == "arn:stream"


def test_every_resource_name_setting_is_covered() -> None:
    names = {
        field.upper() for field in setting_names() if field.endswith(("_table_name", "_queue_name", "_stream_name"))
    }
    assert names <= set(SETTING_OUTPUTS)


def test_a_missing_output_is_named() -> None:
    outputs = {key: value for key, value in OUTPUTS.items() if key != "ApiKeysTableName"}
    with pytest.raises(MissingStackOutputs, match="ApiKeysTableName"):
        settings_environment(outputs)


def test_the_ops_tool_points_settings_at_the_names_the_template_gives() -> None:
    target = Target("dev", "brokerage-dev", None)
    environment: dict[str, str] = {}
    configure_environment(target, environment)
    for variable, output in SETTING_OUTPUTS.items():
        assert environment[variable] == template_name(output, "brokerage-dev"), variable
