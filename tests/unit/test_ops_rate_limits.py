"""`python -m ops keys rate-limit` and the API Gateway side of `keys create`: reading the arguments, storing the
limit, and an account's API key moved between the usage plans of its limits (in-memory API Gateway)."""

from __future__ import annotations

import io

import pytest
from botocore.exceptions import ClientError

from chalicelib.domain.rate_limits import (
    DEFAULT_RATE_LIMIT,
    AccountRateLimit,
    InvalidRateLimit,
    RateLimit,
    UsageKey,
)
from ops import api_limits, keys, rate_limits
from ops.aws import Aws
from ops.cli import build_parser
from ops.target import Target
from ops.usage_plans import UsagePlanMissing, UsagePlans
from tests.unit.fakes import FakeAccountRateLimits
from tests.unit.fakes_aws import FakeApiGateway, FakeWafV2

pytestmark = pytest.mark.unit

PREFIX = "brokerage-dev"
DEFAULT_PLAN = f"{PREFIX}-api"


def parse(*args: str) -> tuple[bool, RateLimit | None]:
    return rate_limits.requested_change(build_parser().parse_args(["keys", "rate-limit", "--account", "acme", *args]))


def test_the_arguments_set_a_limit_put_it_back_to_the_default_or_change_nothing() -> None:
    assert parse() == (False, None)
    assert parse("--rate", "20", "--burst", "1_000") == (True, RateLimit(20, 1000))
    assert parse("--default") == (True, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "20"], "together"),
        (["--burst", "20"], "together"),
        (["--default", "--rate", "5", "--burst", "5"], "--default takes no"),
        (["--rate", "0", "--burst", "5"], "^rate must be"),
        (["--rate", "5", "--burst", "5001"], "^burst must be"),
    ],
)
def test_unusable_arguments_are_refused_saying_why(args: list[str], message: str) -> None:
    with pytest.raises(InvalidRateLimit, match=message):
        parse(*args)


def test_a_non_number_is_refused_by_the_parser() -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["keys", "rate-limit", "--account", "acme", "--rate", "fast", "--burst", "5"])
    assert exited.value.code == 2


def test_locally_the_limit_is_stored_and_shown_and_api_gateway_is_not_asked() -> None:
    store = FakeAccountRateLimits()
    shown = rate_limits.set_and_show("acme", (False, None), store, None)
    assert (shown["rate"], shown["burst"], shown["default"], shown["api_gateway"]) == (10, 50, True, None)
    set_ = rate_limits.set_and_show("acme", (True, RateLimit(2, 3)), store, None)
    assert (set_["rate"], set_["burst"], set_["default"]) == (2, 3, False)
    assert store.get("acme").own == RateLimit(2, 3)
    back = rate_limits.set_and_show("acme", (True, None), store, None)
    assert (back["rate"], back["default"]) == (10, True)
    assert store.get("acme").own is None


def test_a_local_target_has_no_usage_plans() -> None:
    gateway = FakeApiGateway()
    target = Target("local", "brokerage-local", "http://127.0.0.1:4566")
    assert rate_limits.usage_plans_for(target, Aws(apigateway=gateway)) is None
    assert rate_limits.usage_plans_for(Target("dev", PREFIX, None), Aws(apigateway=gateway)) is not None
    assert gateway.calls == []


@pytest.fixture
def gateway() -> FakeApiGateway:
    fake = FakeApiGateway()
    fake.add_plan("someone-elses-plan", api_id="other", stage="prod")
    fake.add_plan(DEFAULT_PLAN)
    return fake


def test_an_accounts_first_key_gets_an_api_gateway_key_in_the_default_plan(gateway: FakeApiGateway) -> None:
    store = FakeAccountRateLimits()
    placement = rate_limits.sync_usage_plan("acme", store, UsagePlans(gateway, PREFIX))
    usage_key = store.get("acme").usage_key
    assert usage_key is not None and placement.usage_key == usage_key
    assert gateway.keys[usage_key.key_id]["name"] == f"{PREFIX}-account-acme"
    assert usage_key.value == gateway.keys[usage_key.key_id]["value"]
    assert gateway.plans_of(usage_key.key_id) == [DEFAULT_PLAN]
    # Again (a second key of the account): nothing new is made.
    calls = len([c for c in gateway.calls if c.startswith("create")])
    rate_limits.sync_usage_plan("acme", store, UsagePlans(gateway, PREFIX))
    assert len([c for c in gateway.calls if c.startswith("create")]) == calls
    assert gateway.plans_of(usage_key.key_id) == [DEFAULT_PLAN]


def test_a_limit_moves_the_key_to_its_plan_made_on_the_stacks_stage_and_shared_by_equal_limits(
    gateway: FakeApiGateway,
) -> None:
    store, plans = FakeAccountRateLimits(), UsagePlans(gateway, PREFIX)
    view = rate_limits.set_and_show("acme", (True, RateLimit(20, 100)), store, plans)
    acme = store.get("acme").usage_key
    assert acme is not None
    name = f"{PREFIX}-rate-20-burst-100"
    assert gateway.plans_of(acme.key_id) == [name]
    (plan,) = [p for p in gateway.plans.values() if p["name"] == name]
    assert plan["apiStages"] == [{"apiId": "api123", "stage": "api"}]
    assert plan["throttle"] == {"rateLimit": 20.0, "burstLimit": 100}
    assert view["api_gateway"]["usage_plan"] == name
    # Another account with the same limit shares the plan, with a key (a bucket) of its own.
    rate_limits.set_and_show("bolt", (True, RateLimit(20, 100)), store, plans)
    bolt = store.get("bolt").usage_key
    assert bolt is not None and bolt != acme
    assert gateway.plans_of(bolt.key_id) == [name]
    assert len(gateway.plans) == 3
    # Back to the default: out of that plan, into the stack's.
    back = rate_limits.set_and_show("acme", (True, None), store, plans)
    assert gateway.plans_of(acme.key_id) == [DEFAULT_PLAN]
    assert back["api_gateway"]["left_usage_plans"] == [name]


def test_a_new_key_is_stored_only_once_it_is_in_its_plan(gateway: FakeApiGateway) -> None:
    # A stored key is what the authorizer returns; one in no plan would be API Gateway's 403 for
    # the account, where without one it gets the stack's fallback key.
    store, plans = FakeAccountRateLimits(), UsagePlans(gateway, PREFIX)
    gateway.failing.add("create_usage_plan_key")
    with pytest.raises(ClientError):
        rate_limits.sync_usage_plan("acme", store, plans)
    assert store.get("acme").usage_key is None
    (made,) = gateway.keys.values()
    # The run again: the key made before is found by its name, placed, then stored.
    gateway.failing.clear()
    rate_limits.sync_usage_plan("acme", store, plans)
    assert store.get("acme").usage_key == UsageKey(made["id"], made["value"])
    assert gateway.plans_of(made["id"]) == [DEFAULT_PLAN]


def test_a_plan_changed_by_hand_is_put_back_to_the_limit_its_name_promises(gateway: FakeApiGateway) -> None:
    plan_id = gateway.add_plan(f"{PREFIX}-rate-20-burst-100", rate=999.0, burst=1)
    rate_limits.set_and_show("acme", (True, RateLimit(20, 100)), FakeAccountRateLimits(), UsagePlans(gateway, PREFIX))
    assert gateway.plans[plan_id]["throttle"] == {"rateLimit": 20.0, "burstLimit": 100}


def test_a_stored_key_that_no_longer_exists_is_replaced_and_one_left_by_a_failed_run_is_reused(
    gateway: FakeApiGateway,
) -> None:
    store, plans = FakeAccountRateLimits(), UsagePlans(gateway, PREFIX)
    store.set_usage_key("acme", UsageKey("deleted", "gone"))
    rate_limits.sync_usage_plan("acme", store, plans)
    replaced = store.get("acme").usage_key
    assert replaced is not None and replaced.key_id in gateway.keys
    # A run that made the key but died before storing it: the next one finds it by name.
    leftover = gateway.create_api_key(name=f"{PREFIX}-account-bolt")
    rate_limits.sync_usage_plan("bolt", store, plans)
    assert store.get("bolt").usage_key == UsageKey(leftover["id"], leftover["value"])


def test_a_plan_left_from_an_earlier_stack_is_put_on_the_stacks_stage(gateway: FakeApiGateway) -> None:
    # The stack re-created: a new RestApi id. The plan made for the old one still carries the limit's name.
    name = f"{PREFIX}-rate-20-burst-100"
    plan_id = gateway.add_plan(name, api_id="oldapi", rate=20.0, burst=100)
    store = FakeAccountRateLimits()
    rate_limits.set_and_show("acme", (True, RateLimit(20, 100)), store, UsagePlans(gateway, PREFIX))
    assert {"apiId": "api123", "stage": "api"} in gateway.plans[plan_id]["apiStages"]
    usage_key = store.get("acme").usage_key
    assert usage_key is not None and gateway.plans_of(usage_key.key_id) == [name]
    # Once on the stage, the plan is left alone.
    updates = gateway.calls.count("update_usage_plan")
    rate_limits.set_and_show("bolt", (True, RateLimit(20, 100)), store, UsagePlans(gateway, PREFIX))
    assert gateway.calls.count("update_usage_plan") == updates == 1


def test_without_the_stacks_plan_nothing_is_made(gateway: FakeApiGateway) -> None:
    gateway.delete_plan(DEFAULT_PLAN)
    plans_before = dict(gateway.plans)
    gateway.calls.clear()
    store = FakeAccountRateLimits()
    for change in ((True, None), (True, RateLimit(20, 100))):
        with pytest.raises(UsagePlanMissing, match="is the stage deployed"):
            rate_limits.set_and_show("acme", change, store, UsagePlans(gateway, PREFIX))
    with pytest.raises(UsagePlanMissing):
        UsagePlans(gateway, PREFIX).place(UsageKey("k", "v"), DEFAULT_RATE_LIMIT)
    # No key, no plan, no key in a plan; nothing stored for the account either.
    assert gateway.keys == {}
    assert gateway.plans == plans_before
    assert all(not keys for keys in gateway.plan_keys.values())
    assert [c for c in gateway.calls if not c.startswith("get_")] == []
    assert store.get("acme") == AccountRateLimit()


@pytest.fixture
def aws(gateway: FakeApiGateway) -> Aws:
    """The stack's stage as deployed by default: 100 requests/s, burst 200, WAF at 3,000 a minute per address."""
    waf = FakeWafV2()
    gateway.set_stage(rate=100.0, burst=200, web_acl_arn=waf.add_acl(f"{PREFIX}-api", "acl1", per_address=3000))
    return Aws(apigateway=gateway, wafv2=waf)


def test_a_rate_above_the_stages_is_refused_naming_the_parameter_to_raise(gateway: FakeApiGateway, aws: Aws) -> None:
    plans = UsagePlans(gateway, PREFIX)
    with pytest.raises(api_limits.AboveApiLimit, match=r"above the API stage's throttle of 100 requests/s") as refused:
        rate_limits.within_api_limits(RateLimit(101, 50), plans, aws)
    assert "ApiThrottleRateLimit" in str(refused.value)
    with pytest.raises(api_limits.AboveApiLimit, match="ApiThrottleBurstLimit"):
        rate_limits.within_api_limits(RateLimit(20, 201), plans, aws)
    # The refusal is the usage error of bad arguments, before anything is made.
    assert isinstance(refused.value, InvalidRateLimit)
    assert [c for c in gateway.calls if not c.startswith("get_")] == ["create_usage_plan", "create_usage_plan"]
    # At the stage's own rate: allowed (WAF's per-address rule warns, see below).
    assert all("WAF" in warning for warning in rate_limits.within_api_limits(RateLimit(100, 200), plans, aws))


def test_a_rate_above_what_waf_lets_one_address_send_is_set_with_a_warning(gateway: FakeApiGateway, aws: Aws) -> None:
    plans = UsagePlans(gateway, PREFIX)
    assert rate_limits.within_api_limits(RateLimit(50, 100), plans, aws) == []
    (warning,) = rate_limits.within_api_limits(RateLimit(51, 100), plans, aws)
    assert "WebAclRequestsPerAddress" in warning and "3000 requests per 60 s" in warning


def test_bounds_that_cannot_be_read_are_not_checked_and_say_so(gateway: FakeApiGateway, aws: Aws) -> None:
    aws.wafv2.denied = True
    (warning,) = rate_limits.within_api_limits(RateLimit(90, 100), UsagePlans(gateway, PREFIX), aws)
    assert warning.startswith("not checked against the web ACL arn:aws:wafv2:")
    gateway.stages.clear()
    (warning,) = rate_limits.within_api_limits(RateLimit(900, 100), UsagePlans(gateway, PREFIX), aws)
    assert warning.startswith("not checked against the throttle of stage api of API api123")


def test_locally_and_for_the_default_limit_there_is_nothing_to_check(gateway: FakeApiGateway, aws: Aws) -> None:
    assert rate_limits.within_api_limits(RateLimit(10_000, 5_000), None, aws) == []
    assert rate_limits.within_api_limits(None, UsagePlans(gateway, PREFIX), aws) == []
    assert "get_stage" not in gateway.calls


def test_the_rate_limit_and_a_new_keys_usage_plan_are_shown() -> None:
    out = io.StringIO()
    view = {
        "target": "stage dev (brokerage-dev-*, AWS)",
        "action": "set",
        "account_id": "acme",
        "rate": 20,
        "burst": 100,
        "default": False,
        "api_gateway": {"api_key_id": "k1", "usage_plan": f"{PREFIX}-rate-20-burst-100"},
        "warnings": ["rate 20 requests/s is above what WAF lets one source address send"],
    }
    keys.render(view, out)
    text = out.getvalue()
    assert "WARNING: rate 20 requests/s is above what WAF lets one source address send" in text
    assert "rate limit of account acme" in text
    assert "20 requests/s" in text and "100 requests" in text and "(default)" not in text
    assert f"key k1 in usage plan {PREFIX}-rate-20-burst-100" in text
    out = io.StringIO()
    created = {
        "target": "stage dev",
        "action": "created",
        "account_id": "acme",
        "key_id": "abcdefghijkl",
        "label": None,
        "scope": "trade",
        "expires_at": None,
        "api_key": "bk_abcdefghijkl_x",
        "api_gateway": None,
        "api_gateway_error": "the account's API Gateway key or usage plan could not be set up: boom",
    }
    keys.render(created, out)
    assert "bk_abcdefghijkl_x" in out.getvalue()  # the key is shown whatever failed after it was made
    assert "WARNING" in out.getvalue() and "keys rate-limit --account acme --default" in out.getvalue()
