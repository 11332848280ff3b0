"""Create or update the infra/resources.yaml stack with CloudFormation and return its outputs."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets as secrets_module
import string
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

# Resolved from this file, not the cwd, so the CLI, the test suite and the
# orchestrator all find the template wherever they are started from.
TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "infra" / "resources.yaml"

DEFAULT_STACK_NAME = "brokerage-local"
DEFAULT_REGION = "us-east-1"

# moto finishes a stack inside the CreateStack call; LocalStack and AWS work
# asynchronously. A short interval keeps local start-up fast, the timeout
# keeps a stuck emulator from hanging the dev stack or a test run forever.
POLL_INTERVAL_S = 0.5
TIMEOUT_S = 300.0

_SUCCESS = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE"})
# A stack whose creation failed: AWS rolls it back (ROLLBACK_COMPLETE); LocalStack
# leaves it in CREATE_FAILED with whatever it created. Neither can be updated
# into a working stack (LocalStack answers "No updates" and the outputs are empty).
_FAILED_CREATION = frozenset({"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED"})
# The stack event that opens an operation; failure reasons are collected from
# the newest event back to this one so an old failure is never reported again.
_OPERATION_START = frozenset({"CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS"})
_NO_UPDATES = "No updates are to be performed"
# moto creates the resources inside CreateStack and, when one fails, answers
# with the resource service's JSON error, which botocore cannot parse as a
# CloudFormation (XML) error: ResponseParserError, not ClientError.
_AWS_ERRORS = (ClientError, BotoCoreError, ResponseParserError)


class ProvisionError(RuntimeError):
    """The stack could not be created or updated."""


def provision(
    endpoint_url: str | None,
    stack_name: str = DEFAULT_STACK_NAME,
    parameters: Mapping[str, str] | None = None,
    cloudformation_client: Any = None,
    *,
    timeout_s: float = TIMEOUT_S,
    poll_interval_s: float = POLL_INTERVAL_S,
    secretsmanager_client: Any = None,
) -> dict[str, str]:
    """Create the stack, or update it if it exists, wait until it is complete and return its Outputs.

    endpoint_url None leaves the endpoint to boto3 (AWS_ENDPOINT_URL, else AWS).
    Parameters left out take the template's defaults, on update too: the
    stack then always matches what this call describes, not an earlier call.
    """
    # Injectable client (as Powertools does) so callers can share a configured
    # client and tests can stub one; typed Any because boto3 ships no stubs.
    client = cloudformation_client or boto3.client(
        "cloudformation",
        endpoint_url=endpoint_url,
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
    )
    template = TEMPLATE_PATH.read_text(encoding="utf-8")
    _check_parameters(template, parameters or {})
    request: dict[str, Any] = {
        "StackName": stack_name,
        "TemplateBody": template,
        "Parameters": [
            {"ParameterKey": key, "ParameterValue": str(value)} for key, value in (parameters or {}).items()
        ],
    }
    try:
        outputs = _create_or_update(client, stack_name, request, timeout_s, poll_interval_s)
        _create_skipped_secrets(outputs, endpoint_url, secretsmanager_client)
    except _AWS_ERRORS as exc:
        raise ProvisionError(f"provisioning stack {stack_name} failed: {exc}") from exc
    return outputs


_SECRET_ALPHABET = string.ascii_letters + string.digits
# Outputs named like this give the name of an AWS::SecretsManager::Secret of the template.
_SECRET_NAME_OUTPUT_SUFFIX = "SecretName"  # noqa: S105 (a naming rule, not a secret)


def _create_skipped_secrets(outputs: Mapping[str, str], endpoint_url: str | None, client: Any = None) -> None:
    """Create, with a random value, each secret of the stack that does not exist.

    moto's CloudFormation has no AWS::SecretsManager::Secret: it skips the
    resource without an error, and the stack's Output still names the secret
    (the template builds the name, it does not read it from the resource).
    On AWS and LocalStack the secret exists and nothing is done here.
    """
    names = [value for key, value in outputs.items() if key.endswith(_SECRET_NAME_OUTPUT_SUFFIX)]
    if not names:
        return
    # Given by a caller whose emulator credentials are not in os.environ (the local stack's), else from it.
    secrets = client or boto3.client(
        "secretsmanager",
        endpoint_url=endpoint_url,
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
    )
    for name in names:
        try:
            secrets.describe_secret(SecretId=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            # Like the template's GenerateSecretString: 48 random letters and digits.
            value = "".join(secrets_module.choice(_SECRET_ALPHABET) for _ in range(48))
            secrets.create_secret(Name=name, SecretString=value)


def _create_or_update(
    client: Any, stack_name: str, request: Mapping[str, Any], timeout_s: float, poll_interval_s: float
) -> dict[str, str]:
    existing = _describe(client, stack_name)
    if existing is None:
        client.create_stack(**request)
    else:
        status = str(existing["StackStatus"])
        if status in _FAILED_CREATION:
            # A stack whose creation failed can only be deleted; doing that
            # silently could hide the failure, so leave the decision to a human.
            raise ProvisionError(
                f"stack {stack_name} is in {status} (its creation failed): delete it and provision again"
            )
        if status.endswith("_IN_PROGRESS"):
            # Another provisioning run (or a console change) is under way:
            # wait for it instead of failing on a concurrent UpdateStack.
            _wait(client, stack_name, timeout_s, poll_interval_s, accept_any_final=True)
        try:
            client.update_stack(**request)
        except ClientError as exc:
            # A persistent emulator that already has this exact stack is the
            # normal case on a second start, not an error.
            if _NO_UPDATES not in str(exc):
                raise
            return _outputs(_require(client, stack_name))

    return _outputs(_wait(client, stack_name, timeout_s, poll_interval_s))


def _check_parameters(template: str, parameters: Mapping[str, str]) -> None:
    """Reject parameters the template does not declare or whose values it does not allow.

    CloudFormation on AWS does this itself; moto ignores unknown keys and every
    constraint, so a typo (PlacementMaxAttempt=5) would silently leave the
    default in place while the application assumes the new value.
    """
    declared: Mapping[str, Mapping[str, Any]] = yaml.safe_load(template).get("Parameters", {})
    problems: list[str] = []
    for key, value in parameters.items():
        spec = declared.get(key)
        if spec is None:
            problems.append(f"{key} is not a parameter of the template (it has {', '.join(sorted(declared))})")
            continue
        if spec.get("Type") == "Number":
            try:
                number = float(value)
            except ValueError:
                problems.append(f"{key}={value!r} is not a number")
                continue
            if "MinValue" in spec and number < float(spec["MinValue"]):
                problems.append(f"{key}={value} is below MinValue {spec['MinValue']}")
            if "MaxValue" in spec and number > float(spec["MaxValue"]):
                problems.append(f"{key}={value} is above MaxValue {spec['MaxValue']}")
        if "AllowedPattern" in spec and not re.fullmatch(str(spec["AllowedPattern"]), value):
            problems.append(f"{key}={value!r} does not match {spec['AllowedPattern']}")
        if not int(spec.get("MinLength", 0)) <= len(value) <= int(spec.get("MaxLength", len(value))):
            problems.append(f"{key}={value!r} has a length outside {spec.get('MinLength')}..{spec.get('MaxLength')}")
        if "AllowedValues" in spec and value not in [str(allowed) for allowed in spec["AllowedValues"]]:
            problems.append(f"{key}={value!r} is not one of {spec['AllowedValues']}")
    if problems:
        raise ProvisionError("invalid parameters: " + "; ".join(problems))


def _describe(client: Any, stack_name: str) -> dict[str, Any] | None:
    """The stack, or None if there is none by that name (a deleted one counts as none)."""
    try:
        stacks = client.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    # AWS hides deleted stacks from a lookup by name; emulators may not.
    live = [stack for stack in stacks if stack.get("StackStatus") != "DELETE_COMPLETE"]
    return dict(live[0]) if live else None


def _require(client: Any, stack_name: str) -> dict[str, Any]:
    stack = _describe(client, stack_name)
    if stack is None:
        raise ProvisionError(f"stack {stack_name} disappeared while being provisioned")
    return stack


def _wait(
    client: Any, stack_name: str, timeout_s: float, poll_interval_s: float, *, accept_any_final: bool = False
) -> dict[str, Any]:
    """Poll until the stack leaves *_IN_PROGRESS; raise with the failure reasons unless it succeeded."""
    deadline = time.monotonic() + timeout_s
    while True:
        stack = _require(client, stack_name)
        status = str(stack["StackStatus"])
        if not status.endswith("_IN_PROGRESS"):
            if status in _SUCCESS or accept_any_final:
                return stack
            reasons = "; ".join(_failure_reasons(client, stack_name)) or stack.get("StackStatusReason") or "none given"
            raise ProvisionError(f"stack {stack_name} ended in {status}: {reasons}")
        if time.monotonic() >= deadline:
            raise ProvisionError(f"stack {stack_name} still {status} after {timeout_s:g}s")
        time.sleep(poll_interval_s)


def _failure_reasons(client: Any, stack_name: str) -> list[str]:
    """Why resources failed in the latest operation, oldest first (the first failure is usually the cause)."""
    reasons: list[str] = []
    kwargs: dict[str, str] = {"StackName": stack_name}
    while True:  # events come newest first, a page at a time
        page = client.describe_stack_events(**kwargs)
        for event in page.get("StackEvents", []):
            status = str(event.get("ResourceStatus", ""))
            is_stack = event.get("ResourceType") == "AWS::CloudFormation::Stack"
            if is_stack and status in _OPERATION_START:
                return reasons[::-1]
            if status.endswith("_FAILED"):
                reason = event.get("ResourceStatusReason") or "no reason given"
                reasons.append(f"{event.get('LogicalResourceId')} {status}: {reason}")
        token = page.get("NextToken")
        if not token:
            return reasons[::-1]
        kwargs["NextToken"] = str(token)


def _outputs(stack: Mapping[str, Any]) -> dict[str, str]:
    return {str(output["OutputKey"]): str(output["OutputValue"]) for output in stack.get("Outputs", [])}


def _parse_parameter(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected Key=Value, got {text!r}")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.provision",
        description="Create or update the stack from infra/resources.yaml and print its outputs as JSON.",
    )
    parser.add_argument(
        "--endpoint-url",
        default=None,
        help="CloudFormation endpoint of the emulator (default: AWS_ENDPOINT_URL; without it, real AWS)",
    )
    parser.add_argument("--stack-name", default=DEFAULT_STACK_NAME)
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        type=_parse_parameter,
        metavar="Key=Value",
        help="template parameter, repeatable (e.g. PlacementMaxAttempts=5)",
    )
    args = parser.parse_args(argv)
    try:
        outputs = provision(args.endpoint_url, args.stack_name, dict(args.parameter))
    except ProvisionError as exc:
        print(f"provisioning failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(outputs, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
