"""The per-account rate limits' part of the merge template (issue 17): the authorizer's shared fallback usage key.

infra/operations.yaml declares the stack's fallback API key (FallbackUsageKey,
in the default limit's usage plan): the usage identifier of every account
without an API Gateway key of its own, which the authorizer returns instead
of none (an Allow without one is API Gateway's 403). CloudFormation returns no
API key's value (Ref and APIKeyId are its id), so operations.yaml sets the
value itself, and infra/build_template.py merges what this module builds: the
same expression as the authorizer's FALLBACK_USAGE_KEY, copied, never typed
twice.
"""

from __future__ import annotations

import copy
from typing import Any

Template = dict[str, Any]

FALLBACK_USAGE_KEY = "FallbackUsageKey"
# The authorizer's setting (chalicelib/config.py, fallback_usage_key).
FALLBACK_USAGE_KEY_VARIABLE = "FALLBACK_USAGE_KEY"


def fallback_usage_key_environment(resources: Template, authorizer_function_id: str) -> Template:
    """The authorizer function's FALLBACK_USAGE_KEY: the fallback API key's Value; ValueError if there is none."""
    key = resources.get(FALLBACK_USAGE_KEY) or {}
    value = key.get("Properties", {}).get("Value")
    if key.get("Type") != "AWS::ApiGateway::ApiKey" or value is None:
        raise ValueError(f"{FALLBACK_USAGE_KEY} must be an AWS::ApiGateway::ApiKey with a Value")
    environment = {"Environment": {"Variables": {FALLBACK_USAGE_KEY_VARIABLE: copy.deepcopy(value)}}}
    return {authorizer_function_id: {"Properties": environment}}
