"""`python -m ops`: show an order, queue depths and dead letters, redrive, manage API keys and accounts' limits;
local stack or a stage."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.queue import QueueUnavailable
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.config import ConfigurationError
from chalicelib.domain.accounts import (
    ApiKeyInvalid,
    InvalidLabel,
    is_key_id,
    key_id_of,
    validate_label,
)
from chalicelib.domain.model import is_order_id
from ops import account_limits, rate_limits
from ops import keys as api_keys
from ops.arguments import ACCOUNT_HELP, account_id
from ops.aws import Aws, check_reachable
from ops.redrive import DEFAULT_MAX_AGE, ReopenPolicy, age_text, operator_identity, parse_age, redrive, sts_caller_arn
from ops.target import LOCAL_STAGE, STAGES, Target, TargetError, configure_environment, select_target
from ops.views import dlq_view, order_view, printable, printable_view, queues_view

EXIT_OK = 0
EXIT_FAILED = 1  # not found, or some messages could not be handled
EXIT_UNUSABLE = 2  # bad arguments, or the target cannot be reached

Result = tuple[dict[str, Any], int]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _age(text: str) -> timedelta:
    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _order_id(text: str) -> str:
    if not is_order_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an order id (a UUID)")
    return text


def _label(text: str) -> str:
    try:
        return str(validate_label(text))
    except InvalidLabel as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _key_id(text: str) -> str:
    # A pasted whole key names its key id too; the key itself goes nowhere.
    try:
        return key_id_of(text)
    except ApiKeyInvalid:
        pass
    if not is_key_id(text):
        raise argparse.ArgumentTypeError("not a key id (the 12 characters after 'bk_' in a key)")
    return text


def build_parser() -> argparse.ArgumentParser:
    # Accepted before or after the subcommand. SUPPRESS: a subcommand's copy
    # sets the value only when given, instead of overwriting one given before.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--stage",
        choices=STAGES,
        default=argparse.SUPPRESS,
        help="local (default): the stack at $AWS_ENDPOINT_URL, prefix $RESOURCE_PREFIX or brokerage-local; "
        "dev, prod: AWS through the usual credential chain, prefix brokerage-<stage>",
    )
    common.add_argument(
        "--json", dest="as_json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__, parents=[common])
    parser.set_defaults(stage=LOCAL_STAGE, as_json=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    order = commands.add_parser(
        "order", parents=[common], help="an order with its executions, history and dead letters"
    )
    order.add_argument("order_id", type=_order_id)
    commands.add_parser(
        "queues", parents=[common], help="approximate queue depths (visible / in flight / delayed), stream shards"
    )
    dlq = commands.add_parser(
        "dlq", parents=[common], help="peek at the orders DLQ and the executions-failed queue without consuming"
    )
    dlq.add_argument("--limit", type=_positive, default=20, help="messages per queue (default 20)")
    again = commands.add_parser(
        "redrive",
        parents=[common],
        help="reopen dead-lettered orders and put set-aside execution reports back on the stream",
    )
    again.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
    again.add_argument("--max", type=_positive, default=None, help="messages per queue at most (default: all)")
    again.add_argument(
        "--max-age",
        type=_age,
        default=DEFAULT_MAX_AGE,
        help=f"reopen only orders created within this age, e.g. 30m, 8h, 2d (default {age_text(DEFAULT_MAX_AGE)}:"
        " the same trading session)",
    )
    again.add_argument(
        "--allow-market",
        type=_order_id,
        action="append",
        default=[],
        metavar="ORDER_ID",
        help="reopen this market or stop order too (they fill at today's price, so are refused unless named);"
        " repeat for each",
    )
    again.add_argument(
        "--operator",
        default=os.environ.get("USER"),
        help="who reopens, recorded on each order (on AWS beside the STS caller ARN; default $USER)",
    )
    keys = commands.add_parser("keys", parents=[common], help="create, list or revoke an account's API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="KEYS_COMMAND")
    create = key_commands.add_parser(
        "create", parents=[common], help="a new key for an account (the account exists from its first key on)"
    )
    create.add_argument("--account", type=account_id, required=True, help=ACCOUNT_HELP)
    create.add_argument("--label", type=_label, default=None, help="what the key is for, e.g. who holds it")
    api_keys.add_arguments(create)
    listing = key_commands.add_parser(
        "list", parents=[common], help="an account's keys: scope, expiry, last use, revocation (never the key)"
    )
    listing.add_argument("--account", type=account_id, required=True, help=ACCOUNT_HELP)
    revoke = key_commands.add_parser(
        "revoke", parents=[common], help="revoke a key at once (revoking it again changes nothing)"
    )
    revoke.add_argument("key_id", type=_key_id, help="the key id that `keys create` printed (or the whole key)")
    rate_limits.add_parser(key_commands, common)
    account_limits.add_parser(commands, common)
    return parser


# --- Commands: each returns its result and the exit status ---


def _order(args: argparse.Namespace, target: Target, aws: Aws) -> Result:
    view = order_view(args.order_id, target, aws)
    if view is None:
        return {"error": f"order {args.order_id} not found on {target.describe()}"}, EXIT_FAILED
    return view, EXIT_OK


def _queues(args: argparse.Namespace, target: Target, aws: Aws) -> Result:
    return queues_view(target, aws), EXIT_OK


def _dlq(args: argparse.Namespace, target: Target, aws: Aws) -> Result:
    return dlq_view(target, aws, args.limit), EXIT_OK


def _redrive(args: argparse.Namespace, target: Target, aws: Aws) -> Result:
    policy = ReopenPolicy(
        operator=operator_identity(target.is_local, args.operator, sts_caller_arn),
        max_age=args.max_age,
        allowed_market_orders=frozenset(args.allow_market),
    )
    report = redrive(target, aws, policy, dry_run=args.dry_run, max_messages=args.max)
    result = {"target": target.describe(), "operator": policy.operator, **report.to_json()}
    return result, EXIT_FAILED if report.errors else EXIT_OK


def _keys(args: argparse.Namespace, target: Target, aws: Aws) -> Result:
    return api_keys.run(args, target, aws)


COMMANDS: dict[str, Callable[[argparse.Namespace, Target, Aws], Result]] = {
    "order": _order,
    "queues": _queues,
    "dlq": _dlq,
    "redrive": _redrive,
    "keys": _keys,
    "accounts": lambda args, target, aws: account_limits.run(args, target),
}


# --- Human-readable output ---


def _render_order(view: dict[str, Any], out: TextIO) -> None:
    order = view["order"]
    print(f"order {order['id']}  ({view['target']})", file=out)
    rows = [
        ("status", order["status"]),
        ("terms", _terms_text(order)),
        ("account", order["account_id"]),
        ("client order id", order["client_order_id"]),
        ("attempts", order["attempts"]),
        ("last error", order["last_error"]),
        ("failure reason", order["failure_reason"]),
        ("exchange order id", order["exchange_order_id"]),
        ("filled", f"{order['filled_quantity']} @ {order['average_fill_price'] or '-'}"),
        ("correlation id", order["correlation_id"]),
        ("cancel sent", order.get("cancel_sent_at")),
        ("version", order["version"]),
    ]
    for label, value in rows:
        if value is not None:
            print(f"  {label:<18} {value}", file=out)
    print("history", file=out)
    for event in view["history"]:
        line = f"  {event['at']}  {event['event']:<15} {event['detail'] or ''}"
        print(line.rstrip(), file=out)
    print(f"executions ({len(view['executions'])}, oldest first)", file=out)
    for e in view["executions"]:
        print(
            f"  {e['time']}  {e['type']:<12} qty {e['last_qty']:>6} @ {e['last_price'] or '-':<10} "
            f"cum {e['cum_qty']:>6} leaves {e['leaves_qty']:>6}  {e['exec_id']}",
            file=out,
        )
    dead, parked = view["dead_letters"], view["failed_executions"]
    print(f"dead letters ({len(dead)} in the orders DLQ, {len(parked)} in executions-failed)", file=out)
    for message in dead:
        print(f"  orders-dlq  {message['message_id']}  received {message['receive_count']}x", file=out)
    for message in parked:
        print(f"  executions-failed  {message['message_id']}  {message['reason']}", file=out)
    if view["dead_letters_scan_incomplete"]:
        print("  (only the first messages were looked at; see `dlq`)", file=out)


def _terms_text(order: dict[str, Any]) -> str:
    """e.g. "sell 4 DE0007164600 stop_limit stop 118.50 limit 117.00 gtd until 2026-12-20T15:00:00.000Z"."""
    prices = "".join(
        f" {label} {order[name]}"
        for label, name in (("stop", "stop_price"), ("limit", "limit_price"))
        if order.get(name) is not None
    )
    # Views from before time in force existed have none: the orders were day orders.
    time_in_force = order.get("time_in_force") or "day"
    expiry = f" until {order['expires_at']}" if order.get("expires_at") else ""
    return f"{order['side']} {order['quantity']} {order['instrument']} {order['type']}{prices} {time_in_force}{expiry}"


def _render_queues(view: dict[str, Any], out: TextIO) -> None:
    print(f"{view['target']}", file=out)
    print(f"  {'queue':<36} {'visible':>8} {'in flight':>10} {'delayed':>8}", file=out)
    for depth in view["queues"].values():
        print(f"  {depth['name']:<36} {depth['visible']:>8} {depth['in_flight']:>10} {depth['delayed']:>8}", file=out)
    stream = view["stream"]
    print(
        f"  stream {stream['name']}: {stream['status']}, {stream['open_shards']} open shards, "
        f"retention {stream['retention_hours']} h",
        file=out,
    )
    for shard in stream["shards"]:
        print(f"    {shard['shard_id']}  {'open' if shard['open'] else 'closed'}", file=out)


def _render_dlq(view: dict[str, Any], out: TextIO) -> None:
    print(f"{view['target']}", file=out)
    dlq = view["orders_dlq"]
    print(f"{dlq['name']}: {len(dlq['messages'])}{'+' if dlq['more'] else ''} messages", file=out)
    for m in dlq["messages"]:
        what = f"order {m['order_id']}" if m["order_id"] else f"not a placement message: '{m['body']}'"
        print(f"  {m['message_id']}  {what}  received {m['receive_count']}x  sent {m['sent_at']}", file=out)
    failed = view["executions_failed"]
    print(f"{failed['name']}: {len(failed['messages'])}{'+' if failed['more'] else ''} messages", file=out)
    for m in failed["messages"]:
        if m["kind"] == "batch":
            what = f"batch {m['shard_id']} {m['start_sequence_number']}..{m['end_sequence_number']} ({m['reason']})"
        elif m["kind"] == "report":
            what = f"report for {m['order_id']}: {m['reason']}"
        else:
            what = f"unrecognised: '{m['body']}'"
        print(f"  {m['message_id']}  {what}  received {m['receive_count']}x", file=out)


def _render_redrive(view: dict[str, Any], out: TextIO) -> None:
    would = "would be " if view["dry_run"] else ""
    print(f"{'dry run, nothing changed: ' if would else ''}{view['target']}", file=out)
    print(f"reopening as {view['operator']}", file=out)
    for name in ("placement", "executions"):
        section = view[name]
        counts = ", ".join(f"{count} {would}{action}" for action, count in section["counts"].items() if count)
        print(f"{name}: {counts or 'nothing to do'}", file=out)
        for item in section["items"]:
            print(f"  {item['action']:<9} {item['message_id']}  {item['detail']}", file=out)


RENDERERS: dict[str, Callable[[dict[str, Any], TextIO], None]] = {
    "order": _render_order,
    "queues": _render_queues,
    "dlq": _render_dlq,
    "redrive": _render_redrive,
    "keys": api_keys.render,
    "accounts": account_limits.render,
}


def _emit(result: dict[str, Any], command: str, as_json: bool, out: TextIO, err: TextIO) -> None:
    if as_json:
        print(json.dumps(result, indent=2), file=out)
    elif "error" in result:
        print(f"ops: {printable(result['error'])}", file=err)
    else:
        # Feed, exchange and client text reaches the terminal only escaped
        # (no control sequences, no bidi reordering); --json escapes by itself.
        RENDERERS[command](printable_view(result), out)


def main(argv: Sequence[str] | None = None, aws: Aws | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        target = select_target(args.stage, os.environ)
        configure_environment(target)
        clients = aws or Aws()
        check_reachable(target, clients)
        result, status = COMMANDS[args.command](args, target, clients)
    except (TargetError, ConfigurationError) as exc:
        result, status = {"error": str(exc)}, EXIT_UNUSABLE
    except (BotoCoreError, ClientError, StorageUnavailable, QueueUnavailable) as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        result, status = {"error": f"an AWS call failed: {exc}{cause}"}, EXIT_FAILED
    _emit(result, args.command, args.as_json, out, sys.stderr)
    return status
