"""`python -m ops keys ...`: create, list and revoke an account's API keys, set its rate limit, and how each result
is shown."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import bootstrap
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.accounts import (
    DEFAULT_SCOPE,
    MAX_KEY_LIFETIME,
    ApiKey,
    InvalidExpiry,
    InvalidScope,
    KeyScope,
    parse_scope,
    validate_lifetime,
)
from chalicelib.service import accounts
from ops import rate_limits
from ops.aws import Aws
from ops.target import Target
from ops.usage_plans import Placement, UsagePlanMissing

EXIT_OK = 0
EXIT_FAILED = 1

_DURATION = re.compile(r"(?P<count>[0-9]{1,5})(?P<unit>[dh])")
_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1)}

Result = tuple[dict[str, Any], int]


def duration(text: str) -> timedelta:
    """argparse type of --expires-in: a count of days or hours, `30d` or `12h`, at most MAX_KEY_LIFETIME."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{shown(text)!r} is not a duration such as 30d or 12h (days or hours)")
    try:
        return validate_lifetime(int(match["count"]) * _UNITS[match["unit"]])
    except InvalidExpiry as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def scope(text: str) -> KeyScope:
    """argparse type of --scope."""
    try:
        return parse_scope(text)
    except InvalidScope as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_arguments(create: argparse.ArgumentParser) -> None:
    """What `keys create` takes besides --account and --label."""
    create.add_argument(
        "--scope",
        type=scope,
        default=DEFAULT_SCOPE,
        metavar="{read,trade}",
        help="trade (default): every route; read: GET only, POST/PATCH/DELETE are refused with 403",
    )
    create.add_argument(
        "--expires-in",
        type=duration,
        default=None,
        metavar="DURATION",
        help=f"e.g. 30d or 12h (at most {MAX_KEY_LIFETIME.days}d); refused like a revoked key after. Default: never",
    )


def run(args: argparse.Namespace, target: Target, aws: Aws) -> Result:
    """The `keys` subcommand named in args.keys_command, against the target's keys table (and API Gateway)."""
    if args.keys_command == "rate-limit":
        return rate_limits.run(args, target, aws)
    keys = bootstrap.api_key_repository()
    if args.keys_command == "create":
        created = accounts.create_api_key(args.account, args.label, keys, scope=args.scope, expires_in=args.expires_in)
        placement, failure = _place_in_usage_plan(created.account_id, target, aws)
        return {
            "target": target.describe(),
            "action": "created",
            "account_id": created.account_id,
            "key_id": created.key_id,
            "label": args.label,
            "scope": created.scope.value,
            "expires_at": _time(created.expires_at),
            "api_key": created.plaintext,
            "api_gateway": rate_limits.placement_view(placement),
            "api_gateway_error": failure,
        }, EXIT_OK if failure is None else EXIT_FAILED
    if args.keys_command == "list":
        listed = accounts.list_api_keys(args.account, keys)
        now = datetime.now(UTC)
        return {
            "target": target.describe(),
            "action": "listed",
            "account_id": args.account,
            "keys": [_key_view(key, now) for key in listed],
        }, EXIT_OK
    now = datetime.now(UTC)
    revoked = accounts.revoke_api_key(args.key_id, keys, clock=lambda: now)
    if revoked is None:
        return {"error": f"no API key {args.key_id} on {target.describe()}"}, EXIT_FAILED
    return {
        "target": target.describe(),
        "action": "revoked" if revoked.revoked_at == now else "already revoked",
        "account_id": revoked.account_id,
        "key_id": revoked.key_id,
        "label": revoked.label,
        "revoked_at": _time(revoked.revoked_at),
    }, EXIT_OK


def _place_in_usage_plan(account_id: str, target: Target, aws: Aws) -> tuple[Placement | None, str | None]:
    """On AWS, the account's API Gateway key in the usage plan of its rate limit: made with its first key.

    Checked again with every later key (idempotent). A failure is reported
    beside the new key rather than raised: the key exists now and is shown
    only this once; `keys rate-limit --account A --default` (or with its
    limit) finishes the part that failed.
    """
    plans = rate_limits.usage_plans_for(target, aws)
    if plans is None:
        return None, None
    try:
        return rate_limits.sync_usage_plan(account_id, bootstrap.account_rate_limits_repository(), plans), None
    except (BotoCoreError, ClientError, StorageUnavailable, UsagePlanMissing) as exc:
        return None, f"the account's API Gateway key or usage plan could not be set up: {exc}"


def _time(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def _key_view(key: ApiKey, now: datetime) -> dict[str, Any]:
    # Never the secret hash: it names nothing an operator needs, and is one step from the key.
    if key.is_revoked:
        state = "revoked"
    elif key.is_expired(now):
        state = "expired"
    else:
        state = "active"
    return {
        "key_id": key.key_id,
        "label": key.label,
        "scope": key.scope.value,
        "state": state,
        "created_at": _time(key.created_at),
        "expires_at": _time(key.expires_at),
        "last_used_at": _time(key.last_used_at),
        "revoked_at": _time(key.revoked_at),
    }


# --- Human-readable output ---


def shown(text: str) -> str:
    """Text someone typed, as it may reach a terminal: every non-printable character escaped (\\n, \\u202e, ...)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else json.dumps(char)[1:-1] for char in text)


def _short(iso: str | None, none: str = "never") -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%SZ") if iso else none


def render(view: dict[str, Any], out: TextIO) -> None:
    if view["action"] in ("set", "shown"):
        rate_limits.render(view, out)
        return
    label = f" ({shown(view['label'])})" if view.get("label") else ""
    if view["action"] == "created":
        expiry = f", expires {_short(view['expires_at'])}" if view["expires_at"] else ", never expires"
        print(f"new API key for account {view['account_id']}{label} on {view['target']}:", file=out)
        print(f"  {view['api_key']}", file=out)
        print(f"scope {view['scope']}{expiry}", file=out)
        print(f"key id {view['key_id']}; revoke with: python -m ops keys revoke {view['key_id']}", file=out)
        print("Shown this once: only its hash is stored. Send it as 'Authorization: Bearer <key>'.", file=out)
        if view.get("api_gateway"):
            print(f"Rate limit: API Gateway usage plan {view['api_gateway']['usage_plan']}.", file=out)
        if view.get("api_gateway_error"):
            print(f"WARNING: {view['api_gateway_error']}; until fixed, the account shares the stack's", file=out)
            fix = f"python -m ops keys rate-limit --account {view['account_id']} --default"
            print(f"fallback key (the default limit, one bucket for all such accounts). Fix: {fix}", file=out)
    elif view["action"] == "listed":
        _render_list(view, out)
    else:
        print(
            f"{view['action']}: key {view['key_id']} of account {view['account_id']}{label} on {view['target']}, "
            f"since {view['revoked_at']}",
            file=out,
        )


def _render_list(view: dict[str, Any], out: TextIO) -> None:
    keys = view["keys"]
    print(f"account {view['account_id']} on {view['target']}: {len(keys)} API keys, oldest first", file=out)
    if not keys:
        return
    print(f"  {'key id':<12}  {'scope':<5}  {'state':<7}  {'created':<20}  {'expires':<20}  last used", file=out)
    for key in keys:
        print(
            f"  {key['key_id']:<12}  {key['scope']:<5}  {key['state']:<7}  {_short(key['created_at']):<20}  "
            f"{_short(key['expires_at']):<20}  {_short(key['last_used_at'])}",
            file=out,
        )
        details = [f"label {shown(key['label'])}"] if key["label"] else []
        if key["revoked_at"]:
            details.append(f"revoked {_short(key['revoked_at'])}")
        if details:
            print(f"  {'':<12}  {'; '.join(details)}", file=out)
