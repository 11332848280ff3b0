"""`python -m ops accounts limits --account A [--max-order-notional N] [--max-open-orders N] [--max-order-quantity N]`.

Sets the limits given (the others stay as they are) and shows all three as
they are in force, each marked when it is the default from settings rather
than the account's own. The API reads an account's limits through a 30 s
in-process cache, so a change takes effect within 30 s.
"""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

from chalicelib import bootstrap
from chalicelib.adapters.accounts_table import LIMITS_CACHE_TTL_S, AccountLimitsRepository
from chalicelib.config import get_settings
from chalicelib.domain.risk import LIMIT_NAMES, AccountLimits, InvalidLimit, RiskLimits, validated
from ops.arguments import ACCOUNT_HELP, account_id, whole_number
from ops.target import Target

EXIT_OK, EXIT_UNUSABLE = 0, 2


def _notional(text: str) -> Decimal:
    try:
        value = Decimal(text.replace("_", ""))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    return value


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """`accounts limits` under the tool's subcommands."""
    accounts = commands.add_parser("accounts", parents=[common], help="an account's pre-trade risk limits")
    account_commands = accounts.add_subparsers(dest="accounts_command", required=True, metavar="ACCOUNTS_COMMAND")
    limits = account_commands.add_parser(
        "limits",
        parents=[common],
        help="show an account's limits (defaults marked); set the ones given",
        description=__doc__,
    )
    limits.add_argument("--account", type=account_id, required=True, help=ACCOUNT_HELP)
    limits.add_argument(
        "--max-order-notional",
        type=_notional,
        default=None,
        metavar="N",
        help="the most one order may be worth (price x quantity)",
    )
    limits.add_argument(
        "--max-open-orders",
        type=whole_number,
        default=None,
        metavar="N",
        help="the most open orders at once (0: no new orders)",
    )
    limits.add_argument(
        "--max-order-quantity", type=whole_number, default=None, metavar="N", help="the most shares in one order"
    )


def limits_view(own: AccountLimits, defaults: RiskLimits) -> dict[str, Any]:
    """Each limit in force, and whether it is the account's own or the default."""
    in_force = own.over(defaults)
    return {
        name: {"value": str(getattr(in_force, name)), "default": getattr(own, name) is None} for name in LIMIT_NAMES
    }


def set_and_show(
    account_id: str, changes: AccountLimits, repository: AccountLimitsRepository, defaults: RiskLimits, bound: int
) -> dict[str, Any]:
    """Store the changes (InvalidLimit if one may not be set), then the account's limits as in force."""
    validated(changes, quantity_bound=bound)
    own = repository.get(account_id) if changes.is_empty() else repository.set(account_id, changes)
    return {"account_id": account_id, "limits": limits_view(own, defaults)}


def run(args: argparse.Namespace, target: Target) -> tuple[dict[str, Any], int]:
    changes = AccountLimits(
        max_order_notional=args.max_order_notional,
        max_open_orders=args.max_open_orders,
        max_order_quantity=args.max_order_quantity,
    )
    try:
        view = set_and_show(
            args.account,
            changes,
            bootstrap.account_limits_repository(),
            bootstrap.risk_defaults(),
            get_settings().max_order_quantity,
        )
    except InvalidLimit as exc:
        return {"error": str(exc)}, EXIT_UNUSABLE
    action = "shown" if changes.is_empty() else "set"
    return {"target": target.describe(), "action": action, **view}, EXIT_OK


def render(view: dict[str, Any], out: TextIO) -> None:
    changed = " (updated)" if view["action"] == "set" else ""
    print(f"limits of account {view['account_id']} on {view['target']}{changed}:", file=out)
    for name, limit in view["limits"].items():
        print(f"  {name:<20} {limit['value']:>20}{'  (default)' if limit['default'] else ''}", file=out)
    if view["action"] == "set":
        print(f"The API applies a change within {LIMITS_CACHE_TTL_S:.0f} s (its in-process cache).", file=out)
