"""Accounts' API Gateway API keys and usage plans: where a deployed stage holds each account's request rate limit.

An account has one API Gateway API key (its usage identifier: the authorizer
returns its value, the API's key source being AUTHORIZER), in exactly one
usage plan: the plan of its limit. Plans are per limit, not per account: a
region holds 300 usage plans by default but 10,000 API keys, and a plan's
throttle applies to each of its keys on its own, so every account with the
same limit shares one plan and still has a bucket of its own. The default
limit's plan is the stack's (`<prefix>-api`, infra/operations.yaml); the
others (`<prefix>-rate-<rate>-burst-<burst>`) this module creates on first
use, on the stack's stage. Only against AWS: an emulator has no API Gateway
for the local API server (which throttles by the accounts table itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.domain.rate_limits import (
    RateLimit,
    UsageKey,
    default_usage_plan_name,
    usage_key_name,
    usage_plan_name,
)

# API Gateway's page size limit for its list calls.
_PAGE = 500


class UsagePlanMissing(Exception):
    """The stack's own usage plan is not there: the stage is not deployed (or not by this template)."""


@dataclass(frozen=True)
class Placement:
    """Where an account's key ended up: the key, its plan, and the plans it was taken out of."""

    usage_key: UsageKey
    plan_name: str
    plan_id: str
    left: tuple[str, ...] = ()


class UsagePlans:
    """The API keys and usage plans of one stack (resource prefix), through a boto3 apigateway client."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._stack_plan: dict[str, Any] | None = None

    def ensure_key(self, account_id: str, stored: UsageKey | None) -> UsageKey:
        """The account's API key: the stored one if it still exists, else one of its name, else a new one."""
        if stored is not None:
            try:
                found = self._client.get_api_key(apiKey=stored.key_id, includeValue=True)
                return UsageKey(str(found["id"]), str(found["value"]))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NotFoundException":
                    raise
        name = usage_key_name(self._prefix, account_id)
        # A key made by an earlier run that failed before storing it is reused, not made twice.
        for key in self._pages(self._client.get_api_keys, nameQuery=name, includeValues=True):
            if key.get("name") == name:
                return UsageKey(str(key["id"]), str(key["value"]))
        created = self._client.create_api_key(
            name=name,
            description=f"Usage identifier of account {account_id}: its authorizer returns it, clients never see it",
            enabled=True,
        )
        return UsageKey(str(created["id"]), str(created["value"]))

    def stack_plan(self) -> dict[str, Any]:
        """The stack's own usage plan (the default limit's, on the stack's stage); UsagePlanMissing if not deployed.

        Asked before anything is made: without it there is no stage to put a
        key or a plan on. Read once per run.
        """
        if self._stack_plan is None:
            name = default_usage_plan_name(self._prefix)
            self._stack_plan = self._plan_named(name)
            if self._stack_plan is None:
                raise UsagePlanMissing(f"no usage plan {name} in this region: is the stage deployed?")
        return self._stack_plan

    def stack_stages(self) -> list[dict[str, str]]:
        """The stack's API stages, as its plan names them: [{"apiId": ..., "stage": ...}]."""
        return [
            {"apiId": str(stage["apiId"]), "stage": str(stage["stage"])} for stage in self.stack_plan()["apiStages"]
        ]

    def place(self, usage_key: UsageKey, limit: RateLimit) -> Placement:
        """Put the key in the plan of this limit (made if need be) and out of any other: a key may be in one per stage.

        Taken out first, then put in: API Gateway refuses a key in two plans of
        one stage. In between (a moment) the account's requests are refused
        with 403, as a stored key in no plan would be (hence a new key is
        stored only once placed: ops/rate_limits.sync_usage_plan).
        """
        default = self.stack_plan()
        name = usage_plan_name(self._prefix, limit)
        plan = default if name == default["name"] else self._plan_for(name, limit)
        current = list(self._pages(self._client.get_usage_plans, keyId=usage_key.key_id))
        left = []
        for other in current:
            if other["id"] != plan["id"]:
                self._client.delete_usage_plan_key(usagePlanId=other["id"], keyId=usage_key.key_id)
                left.append(str(other["name"]))
        if not any(other["id"] == plan["id"] for other in current):
            self._client.create_usage_plan_key(usagePlanId=plan["id"], keyId=usage_key.key_id, keyType="API_KEY")
        return Placement(usage_key, str(plan["name"]), str(plan["id"]), tuple(left))

    def _plan_for(self, name: str, limit: RateLimit) -> dict[str, Any]:
        """The plan of this limit on the stack's stage, its throttle set to the limit; created if it does not exist."""
        plan = self._plan_named(name)
        stages = self.stack_stages()
        throttle = {"rateLimit": float(limit.rate), "burstLimit": limit.burst}
        if plan is None:
            return dict(
                self._client.create_usage_plan(
                    name=name,
                    description=f"Accounts limited to {limit.describe()} (python -m ops keys rate-limit)",
                    apiStages=stages,
                    throttle=throttle,
                )
            )
        patches = _missing_stages(plan, stages)
        if plan.get("throttle") != throttle:
            # Changed by hand since: the name promises this limit, so the plan is put back to it.
            patches += [
                {"op": "replace", "path": "/throttle/rateLimit", "value": str(limit.rate)},
                {"op": "replace", "path": "/throttle/burstLimit", "value": str(limit.burst)},
            ]
        if patches:
            return dict(self._client.update_usage_plan(usagePlanId=plan["id"], patchOperations=patches))
        return plan

    def _plan_named(self, name: str) -> dict[str, Any] | None:
        return next((plan for plan in self._pages(self._client.get_usage_plans) if plan.get("name") == name), None)

    @staticmethod
    def _pages(call: Any, **request: Any) -> Iterator[dict[str, Any]]:
        position = None
        while True:
            page = call(limit=_PAGE, **request, **({"position": position} if position else {}))
            yield from page.get("items", [])
            position = page.get("position")
            if not position:
                return


def _missing_stages(plan: dict[str, Any], stages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Patches adding the stack's stages a plan lacks: a plan made for an earlier stack (a RestApi since re-created).

    Without the stage, API Gateway finds the account's key in no plan of the
    API and refuses its requests with 403. Stages already there are left as
    they are: this only adds.
    """
    present = {(str(stage.get("apiId")), str(stage.get("stage"))) for stage in plan.get("apiStages") or []}
    return [
        {"op": "add", "path": "/apiStages", "value": f"{stage['apiId']}:{stage['stage']}"}
        for stage in stages
        if (stage["apiId"], stage["stage"]) not in present
    ]
