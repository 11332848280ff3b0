"""In-memory fakes of the AWS services the operator tool and the venue credential call (boto3 clients' shapes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError


class FakeSecretsManager:
    """Secrets Manager's GetSecretValue and CreateSecret in memory, failing as a botocore client does."""

    def __init__(self, secrets: dict[str, str] | None = None) -> None:
        self.secrets = dict(secrets or {})
        self.reads = 0
        self.down = False  # every call fails as an unreachable endpoint does

    def get_secret_value(self, **request: str) -> dict[str, str]:
        self.reads += 1
        name = request["SecretId"]
        if self.down:
            raise EndpointConnectionError(endpoint_url="https://secretsmanager.invalid")
        if name not in self.secrets:
            error = {"Code": "ResourceNotFoundException", "Message": "Secrets Manager can't find the secret."}
            raise ClientError({"Error": error}, "GetSecretValue")
        return {"Name": name, "SecretString": self.secrets[name]}

    def create_secret(self, **request: str) -> dict[str, str]:
        name = request["Name"]
        if name in self.secrets:
            raise ClientError({"Error": {"Code": "ResourceExistsException", "Message": "exists"}}, "CreateSecret")
        self.secrets[name] = request["SecretString"]
        return {"Name": name}


class SlowCredential:
    """A venue credential whose reads take time: each read first runs its `takes` (a test moves its clock there)."""

    def __init__(self, value: str, current_takes: Callable[[], None], refresh_takes: Callable[[], None]) -> None:
        self.value = value
        self.current_takes, self.refresh_takes = current_takes, refresh_takes
        self.refreshes = 0

    def current(self) -> str:
        self.current_takes()
        return self.value

    def refreshed(self, refused: str) -> str:
        self.refreshes += 1
        self.refresh_takes()
        return self.value


class FakeApiGateway:
    """API Gateway's API keys and usage plans in memory, as a boto3 apigateway client answers (pages of page_size).

    As the real one: a key may be in only one usage plan of a stage (ConflictException), and an
    unknown key is NotFoundException.
    """

    def __init__(self, page_size: int = 2) -> None:
        self.page_size = page_size
        self.keys: dict[str, dict[str, Any]] = {}
        self.plans: dict[str, dict[str, Any]] = {}
        self.plan_keys: dict[str, set[str]] = {}  # plan id -> key ids
        self.stages: dict[tuple[str, str], dict[str, Any]] = {}  # (api id, stage name) -> GetStage's answer
        self.calls: list[str] = []
        self.failing: set[str] = set()  # calls that fail as an API Gateway error would
        self._ids = 0

    def _new_id(self, kind: str) -> str:
        self._ids += 1
        return f"{kind}{self._ids}"

    def add_plan(
        self, name: str, api_id: str = "api123", stage: str = "api", rate: float = 10.0, burst: int = 50
    ) -> str:
        created = self.create_usage_plan(
            name=name, apiStages=[{"apiId": api_id, "stage": stage}], throttle={"rateLimit": rate, "burstLimit": burst}
        )
        return str(created["id"])

    def _page(self, items: list[dict[str, Any]], position: str | None) -> dict[str, Any]:
        start = int(position or 0)
        page: dict[str, Any] = {"items": [dict(item) for item in items[start : start + self.page_size]]}
        if start + self.page_size < len(items):
            page["position"] = str(start + self.page_size)
        return page

    @staticmethod
    def _error(code: str, operation: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": code}}, operation)

    def get_api_key(self, apiKey: str, includeValue: bool = False) -> dict[str, Any]:
        self.calls.append("get_api_key")
        if apiKey not in self.keys:
            raise self._error("NotFoundException", "GetApiKey")
        return dict(self.keys[apiKey])

    def get_api_keys(
        self, limit: int, nameQuery: str = "", includeValues: bool = False, position: str | None = None
    ) -> dict[str, Any]:
        self.calls.append("get_api_keys")
        return self._page([k for k in self.keys.values() if k["name"].startswith(nameQuery)], position)

    def create_api_key(self, name: str, description: str = "", enabled: bool = True) -> dict[str, Any]:
        self.calls.append("create_api_key")
        key_id = self._new_id("key")
        self.keys[key_id] = {"id": key_id, "name": name, "value": f"value-of-{key_id}", "enabled": enabled}
        return dict(self.keys[key_id])

    def get_usage_plans(self, limit: int, keyId: str | None = None, position: str | None = None) -> dict[str, Any]:
        self.calls.append("get_usage_plans")
        plans = [p for p in self.plans.values() if keyId is None or keyId in self.plan_keys[p["id"]]]
        return self._page(plans, position)

    def create_usage_plan(
        self,
        name: str,
        apiStages: list[dict[str, str]],
        throttle: dict[str, Any],
        description: str = "",
    ) -> dict[str, Any]:
        self.calls.append("create_usage_plan")
        plan_id = self._new_id("plan")
        self.plans[plan_id] = {"id": plan_id, "name": name, "apiStages": apiStages, "throttle": dict(throttle)}
        self.plan_keys[plan_id] = set()
        return dict(self.plans[plan_id])

    def update_usage_plan(self, usagePlanId: str, patchOperations: list[dict[str, str]]) -> dict[str, Any]:
        self.calls.append("update_usage_plan")
        plan = self.plans[usagePlanId]
        for operation in patchOperations:
            if operation["path"] == "/apiStages":
                # API Gateway's form: "<apiId>:<stage>", added or removed one at a time.
                api_id, stage = operation["value"].split(":")
                if operation["op"] == "add":
                    plan["apiStages"] = [*plan["apiStages"], {"apiId": api_id, "stage": stage}]
                else:
                    plan["apiStages"] = [s for s in plan["apiStages"] if s != {"apiId": api_id, "stage": stage}]
                continue
            name = operation["path"].rsplit("/", 1)[1]
            plan["throttle"][name] = float(operation["value"]) if name == "rateLimit" else int(operation["value"])
        return dict(plan)

    def create_usage_plan_key(self, usagePlanId: str, keyId: str, keyType: str) -> dict[str, Any]:
        self.calls.append("create_usage_plan_key")
        if "create_usage_plan_key" in self.failing:
            raise self._error("TooManyRequestsException", "CreateUsagePlanKey")
        stages = {(s["apiId"], s["stage"]) for s in self.plans[usagePlanId]["apiStages"]}
        for plan_id, keys in self.plan_keys.items():
            other = {(s["apiId"], s["stage"]) for s in self.plans[plan_id]["apiStages"]}
            if keyId in keys and plan_id != usagePlanId and stages & other:
                raise self._error("ConflictException", "CreateUsagePlanKey")
        self.plan_keys[usagePlanId].add(keyId)
        return {"id": keyId, "type": keyType}

    def delete_usage_plan_key(self, usagePlanId: str, keyId: str) -> None:
        self.calls.append("delete_usage_plan_key")
        self.plan_keys[usagePlanId].discard(keyId)

    def set_stage(
        self, api_id: str = "api123", stage: str = "api", rate: float = 100.0, burst: int = 200, web_acl_arn: str = ""
    ) -> None:
        """A deployed stage throttled as infra/operations.yaml has it (MethodSettings "/*" "*"), maybe a web ACL."""
        settings = {"throttlingRateLimit": rate, "throttlingBurstLimit": burst, "metricsEnabled": False}
        answer: dict[str, Any] = {"stageName": stage, "methodSettings": {"*/*": settings}}
        if web_acl_arn:
            answer["webAclArn"] = web_acl_arn
        self.stages[(api_id, stage)] = answer

    def get_stage(self, restApiId: str, stageName: str) -> dict[str, Any]:
        self.calls.append("get_stage")
        if (restApiId, stageName) not in self.stages:
            raise self._error("NotFoundException", "GetStage")
        return dict(self.stages[(restApiId, stageName)])

    def delete_plan(self, name: str) -> None:
        """Forget the plan of this name (a stage not deployed, or deployed without it)."""
        (plan_id,) = [plan_id for plan_id, plan in self.plans.items() if plan["name"] == name]
        del self.plans[plan_id], self.plan_keys[plan_id]

    def plans_of(self, key_id: str) -> list[str]:
        """The names of the plans the key is in."""
        return sorted(self.plans[plan_id]["name"] for plan_id, keys in self.plan_keys.items() if key_id in keys)


class FakeWafV2:
    """WAFv2's GetWebACL for web ACLs with one rate-based rule per source address, as infra/operations.yaml's."""

    def __init__(self) -> None:
        self.acls: dict[tuple[str, str, str], dict[str, Any]] = {}  # (name, scope, id) -> WebACL
        self.denied = False  # every call refused, as for a role without wafv2:GetWebACL

    def add_acl(self, name: str, acl_id: str, per_address: int, window_s: int = 60) -> str:
        """The ACL's ARN."""
        statement = {
            "RateBasedStatement": {"Limit": per_address, "AggregateKeyType": "IP", "EvaluationWindowSec": window_s}
        }
        rule = {"Name": "RequestsPerSourceAddress", "Priority": 0, "Statement": statement}
        self.acls[(name, "REGIONAL", acl_id)] = {"Name": name, "Id": acl_id, "Rules": [rule]}
        return f"arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/{name}/{acl_id}"

    def get_web_acl(self, Name: str, Scope: str, Id: str) -> dict[str, Any]:
        if self.denied:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "denied"}}, "GetWebACL")
        if (Name, Scope, Id) not in self.acls:
            raise ClientError({"Error": {"Code": "WAFNonexistentItemException", "Message": "none"}}, "GetWebACL")
        return {"WebACL": self.acls[(Name, Scope, Id)], "LockToken": "token"}
