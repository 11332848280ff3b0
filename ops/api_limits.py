"""The deployed API's own limits, which bound every account's: the stage's throttle and WAF's per-address rule.

An account's usage plan cannot give it more than the stage lets through for
all accounts together (ApiThrottleRateLimit, ApiThrottleBurstLimit in
infra/operations.yaml): `ops keys rate-limit` refuses such a limit, naming the
template parameter to raise first. WAF blocks a source address above
WebAclRequestsPerAddress requests a minute whatever its account's limit: a
limit above that rate is allowed (several addresses may share an account) but
warned about. Read from the deployed stage itself (its method settings and its
web ACL), not from the template: what API Gateway applies is what counts.
Only against AWS: a local stack has no stage (docs/operations.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.rate_limits import InvalidRateLimit, RateLimit

# The stage's throttle for every method and path: infra/operations.yaml's MethodSettings "/*" "*".
ALL_METHODS = "*/*"
# WAF's rate-based rules count over EvaluationWindowSec; 300 s when the rule does not say.
WAF_DEFAULT_WINDOW_S = 300


class AboveApiLimit(InvalidRateLimit):
    """A limit the deployed stage could never let through (the message names the template parameter to raise)."""


@dataclass(frozen=True)
class ApiBounds:
    """What the deployed stage lets through; None where it sets nothing or could not be read (`unread` says which)."""

    stage_rate: float | None = None
    stage_burst: int | None = None
    # WAF's per-source-address rule: requests per window, and the window.
    per_address: int | None = None
    per_address_window_s: int = 60
    unread: tuple[str, ...] = ()

    @property
    def per_address_rate(self) -> float | None:
        """Requests per second one source address may send before WAF blocks it."""
        return None if self.per_address is None else self.per_address / self.per_address_window_s


def read_bounds(apigateway: Any, wafv2: Any, stages: list[dict[str, str]]) -> ApiBounds:
    """The bounds of the stack's stage (the first of its plan's stages: the stack has one)."""
    if not stages:
        return ApiBounds(unread=("the stack's usage plan names no API stage",))
    api_id, stage_name = stages[0]["apiId"], stages[0]["stage"]
    try:
        stage = apigateway.get_stage(restApiId=api_id, stageName=stage_name)
    except (BotoCoreError, ClientError) as exc:
        return ApiBounds(unread=(f"the throttle of stage {stage_name} of API {api_id} ({exc})",))
    throttle = (stage.get("methodSettings") or {}).get(ALL_METHODS) or {}
    rate, burst = throttle.get("throttlingRateLimit"), throttle.get("throttlingBurstLimit")
    bounds = ApiBounds(
        stage_rate=None if rate is None else float(rate), stage_burst=None if burst is None else int(burst)
    )
    acl_arn = stage.get("webAclArn")
    if not acl_arn:
        return bounds  # WebAcl=disabled: no per-address rule
    try:
        per_address, window = _per_address_rule(wafv2, str(acl_arn))
    except (BotoCoreError, ClientError, ValueError) as exc:
        return ApiBounds(bounds.stage_rate, bounds.stage_burst, unread=(f"the web ACL {acl_arn} ({exc})",))
    return ApiBounds(bounds.stage_rate, bounds.stage_burst, per_address, window)


def _per_address_rule(wafv2: Any, acl_arn: str) -> tuple[int | None, int]:
    """The lowest rate-based limit of the web ACL per source address, and its window in seconds."""
    # arn:aws:wafv2:<region>:<account>:regional/webacl/<name>/<id>
    resource = acl_arn.split(":", 5)[-1].split("/")
    if len(resource) != 4 or resource[1] != "webacl":
        raise ValueError(f"not a web ACL ARN: {acl_arn}")
    scope = "CLOUDFRONT" if resource[0] == "global" else "REGIONAL"
    acl = wafv2.get_web_acl(Name=resource[2], Scope=scope, Id=resource[3])["WebACL"]
    rules = [rule["Statement"]["RateBasedStatement"] for rule in acl.get("Rules", [])]
    per_ip = [rule for rule in rules if rule.get("AggregateKeyType") == "IP" and "Limit" in rule]
    if not per_ip:
        return None, WAF_DEFAULT_WINDOW_S
    windowed = [(int(rule["Limit"]), int(rule.get("EvaluationWindowSec", WAF_DEFAULT_WINDOW_S))) for rule in per_ip]
    return min(windowed, key=lambda limit_and_window: limit_and_window[0] / limit_and_window[1])


def check(limit: RateLimit, bounds: ApiBounds) -> list[str]:
    """Warnings for this limit; AboveApiLimit if the stage could never let it through."""
    if bounds.stage_rate is not None and limit.rate > bounds.stage_rate:
        raise AboveApiLimit(
            f"rate {limit.rate} requests/s is above the API stage's throttle of {bounds.stage_rate:g} requests/s for "
            "all accounts together; raise the stack's ApiThrottleRateLimit parameter (and deploy) first"
        )
    if bounds.stage_burst is not None and limit.burst > bounds.stage_burst:
        raise AboveApiLimit(
            f"burst {limit.burst} is above the API stage's burst of {bounds.stage_burst} for all accounts "
            "together; raise the stack's ApiThrottleBurstLimit parameter (and deploy) first"
        )
    warnings = [f"not checked against {what}: could not read it" for what in bounds.unread]
    per_address_rate = bounds.per_address_rate
    if per_address_rate is not None and limit.rate > per_address_rate:
        warnings.append(
            f"rate {limit.rate} requests/s is above what WAF lets one source address send "
            f"({bounds.per_address} requests per {bounds.per_address_window_s} s, {per_address_rate:g}/s: the "
            "stack's WebAclRequestsPerAddress parameter): a client sending from one address is blocked (429) first"
        )
    return warnings
