"""The packaged stack for the template tests: built once per stage per test session, offline, with helpers to read it.

tests/tooling/test_package.py and test_package_iam.py check the SAM template
`chalice package` writes; tests/tooling/test_expanded_template.py the template
the SAM transform makes of it. All use `package_stage` (through the `packaged`
fixture of tests/tooling/conftest.py), which packages each stage once however
many modules ask.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from chalice.config import Config

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STAGES = ("dev", "prod")
REGION = "us-east-1"


def load_infra_script(name: str) -> ModuleType:
    # infra/ is a directory of files, not a package: load the script by path,
    # with infra/ on the path for the modules it imports (as `python infra/x.py` has).
    if str(REPO / "infra") not in sys.path:
        sys.path.insert(0, str(REPO / "infra"))
    spec = importlib.util.spec_from_file_location(name, REPO / "infra" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_template = load_infra_script("build_template")
RESOURCES = yaml.safe_load((REPO / "infra" / "resources.yaml").read_text(encoding="utf-8"))
CHALICE_CONFIG = json.loads((REPO / ".chalice" / "config.json").read_text(encoding="utf-8"))
HANDLERS = list(CHALICE_CONFIG["lambda_functions"])


# --- Packaging, once per stage --------------------------------------------------------


def offline_env(home: Path) -> dict[str, str]:
    """No credentials, no AWS config, and any network access fails at once instead of downloading."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_DEFAULT_REGION": REGION,  # chalice package needs a region, nothing else of AWS
        "AWS_EC2_METADATA_DISABLED": "true",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "PIP_NO_INDEX": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def copy_project(destination: Path) -> None:
    """The app, its config and infra/, with an empty requirements.txt.

    chalice package downloads Linux wheels for every package in
    requirements.txt (pip download, network) before it writes the template;
    with no requirements it packages the code alone, offline and in about a
    second. The template does not depend on the requirements.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copy2(REPO / "app.py", destination / "app.py")
    shutil.copytree(REPO / "chalicelib", destination / "chalicelib", ignore=ignore)
    shutil.copytree(REPO / "infra", destination / "infra", ignore=ignore)
    (destination / ".chalice").mkdir()
    for path in [REPO / ".chalice" / "config.json", *sorted((REPO / ".chalice").glob("policy-*.json"))]:
        shutil.copy2(path, destination / ".chalice" / path.name)
    (destination / "requirements.txt").write_text("", encoding="utf-8")


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
    return result


@dataclass
class Packaged:
    stage: str
    project: Path
    env: dict[str, str]
    template: dict[str, Any]  # chalice package --merge-template: what gets deployed
    plain: dict[str, Any]  # chalice package alone: what Chalice generates by itself
    parameters_file: str

    @property
    def resources(self) -> dict[str, Any]:
        return dict(self.template["Resources"])

    @property
    def sam_path(self) -> Path:
        return self.project / "build" / "package" / "sam.json"

    @property
    def expanded_path(self) -> Path:
        return self.project / "build" / "expanded.json"

    @functools.cached_property
    def expanded(self) -> dict[str, Any]:
        """The SAM transform's result, made as `make package` makes it: infra/expand_template.py, offline."""
        command = [
            str(BIN / "python"),
            "infra/expand_template.py",
            str(self.sam_path),
            "--out",
            str(self.expanded_path),
        ]
        run([*command, "--region", REGION], self.project, self.env)
        expanded: dict[str, Any] = json.loads(self.expanded_path.read_text(encoding="utf-8"))
        return expanded

    @functools.cached_property
    def lint_findings(self) -> dict[Path, list[str]]:
        """cfn-lint's findings on the SAM and the expanded template, from one run as `make package` makes it."""
        assert self.expanded  # written first
        return lint_findings(self, [self.sam_path, self.expanded_path])


_PACKAGED: dict[str, Packaged] = {}


def package_stage(stage: str, tmp_path_factory: pytest.TempPathFactory) -> Packaged:
    """build_template + chalice package (merged, and plain) for one stage, once per test session."""
    if stage in _PACKAGED:
        return _PACKAGED[stage]
    project = tmp_path_factory.mktemp(f"package-{stage}")
    copy_project(project)
    env = offline_env(tmp_path_factory.mktemp("home"))
    python, chalice = str(BIN / "python"), str(BIN / "chalice")
    merge, parameters = project / "build" / "merge-template.json", project / "build" / "parameters.txt"
    run(
        [python, "infra/build_template.py", "--stage", stage, "--out", str(merge), "--parameters-out", str(parameters)],
        project,
        env,
    )
    run([chalice, "package", "--stage", stage, "--merge-template", str(merge), "build/package"], project, env)
    run([chalice, "package", "--stage", stage, "build/plain"], project, env)
    _PACKAGED[stage] = Packaged(
        stage=stage,
        project=project,
        env=env,
        template=json.loads((project / "build" / "package" / "sam.json").read_text(encoding="utf-8")),
        plain=json.loads((project / "build" / "plain" / "sam.json").read_text(encoding="utf-8")),
        parameters_file=parameters.read_text(encoding="utf-8"),
    )
    return _PACKAGED[stage]


def lint_findings(packaged: Packaged, templates: list[Path], *options: str) -> dict[Path, list[str]]:
    """cfn-lint's findings per template (rule, message, where), run offline from the packaged project.

    One run for several templates: cfn-lint takes a second to start.
    """
    command = [str(BIN / "cfn-lint"), "--format", "json", *options, "--", *map(str, templates)]
    result = subprocess.run(
        command, cwd=packaged.project, env=packaged.env, capture_output=True, text=True, timeout=300, check=False
    )
    # Exit codes 2, 4 and 8 flag errors, warnings and notes; anything else (or no JSON) is cfn-lint failing.
    assert result.returncode & ~14 == 0 and result.stdout.startswith("["), result.stdout + result.stderr
    findings: dict[Path, list[str]] = {template: [] for template in templates}
    for match in json.loads(result.stdout):
        where = "/".join(map(str, match["Location"]["Path"]))
        findings[Path(match["Filename"])].append(f"{match['Rule']['Id']} {where}: {match['Message']}")
    return findings


# --- Reading templates -------------------------------------------------------------------


def getatt(logical_id: str, attribute: str = "Arn") -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def key(value: Any) -> str:
    """A hashable, canonical form of a template value (a resource reference, a string)."""
    return json.dumps(value, sort_keys=True)


PSEUDO_PARAMETERS = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": "123456789012"}


def resolve_sub(value: Any, parameters: dict[str, Any]) -> str:
    """A Fn::Sub of parameters (their defaults) and pseudo parameters as the string it deploys as."""
    assert isinstance(value, dict) and set(value) == {"Fn::Sub"}, value
    values = {**PSEUDO_PARAMETERS, **{name: str(spec["Default"]) for name, spec in parameters.items()}}
    return re.sub(r"\$\{([^}]+)\}", lambda match: values[match[1]], value["Fn::Sub"])


def defaults(template: dict[str, Any]) -> dict[str, Any]:
    return {name: spec.get("Default") for name, spec in template["Parameters"].items()}


def stage_environment(stage: str) -> dict[str, str]:
    return Config(chalice_stage=stage, function_name=HANDLERS[0], config_from_disk=CHALICE_CONFIG).environment_variables


def function_id(handler: str) -> str:
    return str(build_template.function_logical_ids(handler)[0])


def event_of(template: dict[str, Any], handler: str) -> tuple[str, dict[str, Any]]:
    events: dict[str, dict[str, Any]] = template["Resources"][function_id(handler)]["Properties"].get("Events", {})
    assert len(events) == 1, f"{handler}: expected one event, got {list(events)}"
    return next(iter(events.items()))


NAME_PROPERTIES = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::Kinesis::Stream": "Name",
    "AWS::SecretsManager::Secret": "Name",
}


def name_of(logical_id: str, prefix: str) -> str:
    """The name resources.yaml gives a resource with this ResourcePrefix."""
    resource = RESOURCES["Resources"][logical_id]
    return resolve_sub(
        resource["Properties"][NAME_PROPERTIES[resource["Type"]]], {"ResourcePrefix": {"Default": prefix}}
    )


def role_statements(template: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    """The statements of an inline-only role's policies."""
    role = template["Resources"][role_id]
    assert role["Type"] == "AWS::IAM::Role"
    assert "ManagedPolicyArns" not in role["Properties"], f"{role_id}: managed policies are not least privilege"
    return [
        statement for policy in role["Properties"]["Policies"] for statement in policy["PolicyDocument"]["Statement"]
    ]


def grants(template: dict[str, Any], role_id: str, *, conditioned: bool | None = None) -> set[tuple[str, str]]:
    """(action, canonical resource) pairs an inline-only role allows.

    conditioned: True only the statements with a Condition, False only those
    without, None all of them.
    """
    pairs: set[tuple[str, str]] = set()
    for statement in role_statements(template, role_id):
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement, statement
        if conditioned is not None and ("Condition" in statement) != conditioned:
            continue
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        pairs |= {(action, key(resource)) for action in actions for resource in resources}
    return pairs


def role_of(template: dict[str, Any], logical_id: str) -> str:
    role = template["Resources"][logical_id]["Properties"]["Role"]
    assert set(role) == {"Fn::GetAtt"} and role["Fn::GetAtt"][1] == "Arn", role
    return str(role["Fn::GetAtt"][0])


def referenced_resource(value: Any, template: dict[str, Any]) -> str | None:
    """The resource a value is the Arn (or Ref) of: Ref, Fn::GetAtt [X, Arn], or a Fn::Sub of `${X.Arn}` alone.

    A table's StreamArn (GetAtt or `${X.StreamArn}`) counts as the table's: its stream is created with it.

    None for anything else, e.g. an ARN built from a name, which CloudFormation
    cannot tell belongs to a resource of the template.
    """
    if not isinstance(value, dict) or len(value) != 1:
        return None
    (function, argument), resources = next(iter(value.items())), template["Resources"]
    if function == "Ref":
        logical_id = argument
    elif function == "Fn::GetAtt" and list(argument[1:]) in (["Arn"], ["StreamArn"]):
        logical_id = argument[0]
    elif (
        function == "Fn::Sub"
        and isinstance(argument, str)
        and re.fullmatch(r"\$\{[A-Za-z0-9]+\.(Stream)?Arn\}", argument)
    ):
        logical_id = argument[2:].split(".")[0]
    else:
        return None
    return str(logical_id) if logical_id in resources else None
