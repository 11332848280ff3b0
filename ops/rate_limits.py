"""`python -m ops keys rate-limit --account A [--rate N --burst N | --default]`: an account's request rate limit.

Without --rate/--burst/--default it shows the limit in force (marked when it
is the default, 10 requests/s with a burst of 50). Setting one stores it in
the accounts table, where the local API server reads it (within 60 s, its
cache); on a deployed stage (--stage dev/prod) it also puts the account's API
Gateway API key into the usage plan of that limit (ops/usage_plans.py), which
API Gateway applies at once. `keys create` does the API Gateway part too, so
every account on AWS has its key in a plan from its first key on.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from chalicelib import bootstrap
from chalicelib.adapters.accounts_table import RATE_LIMITS_CACHE_TTL_S, AccountRateLimitsStore
from chalicelib.domain.rate_limits import MAX_BURST, MAX_RATE, AccountRateLimit, InvalidRateLimit, RateLimit
from ops import api_limits
from ops.arguments import ACCOUNT_HELP, account_id, whole_number
from ops.aws import Aws
from ops.target import Target
from ops.usage_plans import Placement, UsagePlanMissing, UsagePlans

EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2

Result = tuple[dict[str, Any], int]


def add_parser(key_commands: Any, common: argparse.ArgumentParser) -> None:
    """`keys rate-limit` under the `keys` subcommands."""
    rate_limit = key_commands.add_parser(
        "rate-limit",
        parents=[common],
        help="show an account's request rate limit (default marked); set it, or put it back to the default",
        description=__doc__,
    )
    rate_limit.add_argument("--account", type=account_id, required=True, help=ACCOUNT_HELP)
    rate_limit.add_argument(
        "--rate",
        type=whole_number,
        default=None,
        metavar="N",
        help=f"requests per second, 1 to {MAX_RATE} (with --burst)",
    )
    rate_limit.add_argument(
        "--burst",
        type=whole_number,
        default=None,
        metavar="N",
        help=f"requests at once, 1 to {MAX_BURST} (with --rate)",
    )
    rate_limit.add_argument("--default", action="store_true", help="back to the default limit (forget the account's)")


def requested_change(args: argparse.Namespace) -> tuple[bool, RateLimit | None]:
    """(whether to change anything, the new own limit: None for the default); InvalidRateLimit if unusable."""
    given = (args.rate is not None, args.burst is not None)
    if args.default:
        if any(given):
            raise InvalidRateLimit("--default takes no --rate or --burst")
        return True, None
    if given == (False, False):
        return False, None
    if not all(given):
        raise InvalidRateLimit("give --rate and --burst together")
    return True, RateLimit(args.rate, args.burst)


def sync_usage_plan(account_id: str, store: AccountRateLimitsStore, plans: UsagePlans) -> Placement:
    """The account's API key (made and stored if need be) in the usage plan of its limit in force.

    UsagePlanMissing, before any key or plan is made, when the stack's plan is not there.
    A new key is stored only once it is in its plan: the authorizer returns a
    stored key as the account's usage identifier, and a key in no plan is
    API Gateway's 403, where an account without one gets the stack's shared
    fallback key. A key made but not stored is found by its name next time.
    """
    plans.stack_plan()
    settings = store.get(account_id)
    usage_key = plans.ensure_key(account_id, settings.usage_key)
    placement = plans.place(usage_key, settings.in_force)
    if usage_key != settings.usage_key:
        store.set_usage_key(account_id, usage_key)
    return placement


def set_and_show(
    account_id: str, change: tuple[bool, RateLimit | None], store: AccountRateLimitsStore, plans: UsagePlans | None
) -> dict[str, Any]:
    """Store the change (if any), bring API Gateway in line (plans: None locally); the account's limit in force."""
    changing, own = change
    if plans is not None and changing:
        plans.stack_plan()  # UsagePlanMissing before anything is stored
    settings = store.set_limit(account_id, own) if changing else store.get(account_id)
    placement = sync_usage_plan(account_id, store, plans) if plans is not None and changing else None
    return {"account_id": account_id, **limit_view(settings), "api_gateway": placement_view(placement)}


def within_api_limits(own: RateLimit | None, plans: UsagePlans | None, aws: Aws) -> list[str]:
    """Warnings for a new limit on a deployed stage; AboveApiLimit if its stage could never let it through.

    Nothing to check locally (no stage) or for the default limit.
    """
    if plans is None or own is None:
        return []
    return api_limits.check(own, api_limits.read_bounds(aws.apigateway, aws.wafv2, plans.stack_stages()))


def limit_view(settings: AccountRateLimit) -> dict[str, Any]:
    limit = settings.in_force
    return {"rate": limit.rate, "burst": limit.burst, "default": settings.is_default}


def placement_view(placement: Placement | None) -> dict[str, Any] | None:
    if placement is None:
        return None
    return {
        "api_key_id": placement.usage_key.key_id,
        "usage_plan": placement.plan_name,
        "usage_plan_id": placement.plan_id,
        "left_usage_plans": list(placement.left),
    }


def usage_plans_for(target: Target, aws: Aws) -> UsagePlans | None:
    """API Gateway's side, on a deployed stage only: an emulator's target has no API Gateway of ours."""
    return None if target.is_local else UsagePlans(aws.apigateway, target.prefix)


def run(args: argparse.Namespace, target: Target, aws: Aws) -> Result:
    try:
        change = requested_change(args)
        plans = usage_plans_for(target, aws)
        warnings = within_api_limits(change[1], plans, aws) if change[0] else []
        store = bootstrap.account_rate_limits_repository()
        view = set_and_show(args.account, change, store, plans)
    except InvalidRateLimit as exc:
        return {"error": str(exc)}, EXIT_UNUSABLE
    except UsagePlanMissing as exc:
        return {"error": f"{exc} ({target.describe()})"}, EXIT_FAILED
    action = "set" if change[0] else "shown"
    return {"target": target.describe(), "action": action, **view, "warnings": warnings}, EXIT_OK


def render(view: dict[str, Any], out: TextIO) -> None:
    changed = " (updated)" if view["action"] == "set" else ""
    default = "  (default)" if view["default"] else ""
    print(f"rate limit of account {view['account_id']} on {view['target']}{changed}:", file=out)
    print(f"  rate   {view['rate']:>6} requests/s{default}", file=out)
    print(f"  burst  {view['burst']:>6} requests{default}", file=out)
    gateway = view.get("api_gateway")
    if gateway is not None:
        print(f"  API Gateway: key {gateway['api_key_id']} in usage plan {gateway['usage_plan']}", file=out)
    for warning in view.get("warnings") or []:
        print(f"WARNING: {warning}", file=out)
    if view["action"] == "set":
        where = "API Gateway applies it at once; " if gateway is not None else ""
        print(f"{where}the local API server within {RATE_LIMITS_CACHE_TTL_S:.0f} s (its cache).", file=out)
