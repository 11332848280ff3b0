"""Expands the SAM transform of `chalice package`'s template offline, into the template CloudFormation creates.

cfn-lint 1.x validates a SAM template against SAM's schema only; it no longer
expands the transform, so it never sees the mappings, stages, permissions and
roles SAM generates. aws-sam-translator (the transform's own code) expands it
here with no AWS account and no network: the region is given, code locations
are placeholders, and no AWS managed policy can be looked up (every function
has its own role). The result is for checks (`make package`, the tests), not
for deployment: its code locations point nowhere.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

Template = dict[str, Any]

# Where SAM expects an S3 location instead of the local file Chalice names
# (`CodeUri: ./deployment.zip`), per resource type.
_CODE_PROPERTIES = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}
PLACEHOLDER_CODE_URI = "s3://expanded-template-check/deployment.zip"


class ExpansionError(Exception):
    """SAM refused the template; the message lists SAM's reasons."""


def _no_managed_policies() -> dict[str, str]:
    # SAM asks for the name -> ARN map of AWS managed policies (an IAM call)
    # only when it creates a function's role itself. Ours come with their
    # roles, so the map stays empty and nothing calls IAM; a policy name SAM
    # did look up would fail the expansion instead of reaching the network.
    return {}


def expand(sam_template: Template, region: str) -> Template:
    """The CloudFormation template the SAM transform makes of sam_template in region."""
    template = copy.deepcopy(sam_template)
    for resource in template.get("Resources", {}).values():
        code_property = _CODE_PROPERTIES.get(resource.get("Type", ""))
        if code_property and isinstance(resource.get("Properties", {}).get(code_property), str):
            resource["Properties"][code_property] = PLACEHOLDER_CODE_URI
    # A session only names the region (AWS::Region, the partition); it has no
    # credentials and makes no call.
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=region))
    try:
        expanded: Template = translator.translate(
            template, parameter_values={}, get_managed_policy_map=_no_managed_policies
        )
    except InvalidDocumentException as exc:
        reasons = "; ".join(cause.message for cause in exc.causes)
        raise ExpansionError(f"SAM refused the template: {reasons}") from exc
    return expanded


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path, help="the SAM template, e.g. build/dev/package/sam.json")
    parser.add_argument("--out", type=Path, required=True, help="where to write the expanded template (JSON)")
    parser.add_argument("--region", required=True, help="the region to expand for, e.g. us-east-1")
    args = parser.parse_args(argv)
    try:
        expanded = expand(json.loads(args.template.read_text(encoding="utf-8")), args.region)
    except ExpansionError as exc:
        print(f"expand_template: {args.template}: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(expanded, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
