"""Redrive: failed placements back to the orders queue, set-aside execution reports back onto the stream."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import bootstrap
from chalicelib.adapters.queue import QueueUnavailable, parse_order_message
from chalicelib.adapters.repository import OrderRepository, StorageUnavailable
from chalicelib.domain.model import Order, OrderStatus, OrderType
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.recovery import reopen_failed_order
from ops.aws import Aws, Message, delete, receive, release
from ops.messages import FailedBatch, ParkedReport, parse_failed_execution
from ops.target import Target

# How long a message being redriven stays hidden from everyone else. Long
# enough for one message's work (a few AWS calls); if the tool dies, its
# messages come back after this and the next run picks them up.
HOLD_S = 60
PUT_RECORDS_MAX = 500  # Kinesis PutRecords limit per call
PUT_ATTEMPTS = 4
GET_RECORDS_LIMIT = 1000
# A range is a few hundred records at most; this bounds a read that never
# reaches the end sequence number (e.g. a shard that vanished).
GET_RECORDS_MAX_CALLS = 200
GET_RECORDS_PAUSE_S = 0.2  # Kinesis allows 5 GetRecords calls per second per shard

# A failed order is reopened only within the trading session it was entered
# in: a client told "failed" (final) may have sent a new order since, and a
# reopening hours later fills at a price the client never saw. A US equities
# regular session is 6.5 h, 9:30-16:00 ET; 8 h from the order's creation
# (the client's decision) covers an order entered at the open and redriven
# at the close, and never reaches into the next session. --max-age changes it.
DEFAULT_MAX_AGE = timedelta(hours=8)
_AGE = re.compile(r"(\d+)([smhd])")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_age(text: str) -> timedelta:
    """'90s', '30m', '8h', '2d' -> the duration; ValueError otherwise."""
    match = _AGE.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not an age: a positive whole number and s, m, h or d (e.g. 8h)")
    return timedelta(**{_AGE_UNITS[match.group(2)]: int(match.group(1))})


def age_text(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _rough(age: timedelta) -> str:
    minutes, seconds = divmod(int(age.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {seconds}s"


def operator_identity(local: bool, name: str | None, caller_arn: Callable[[], str | None]) -> str:
    """Who reopens orders, as recorded on each: the AWS caller on a deployed stage, else the name given.

    On AWS the STS caller ARN is what the audit trail (CloudTrail) knows the
    writes by, and an operator cannot choose it; a name given with
    --operator is added beside it (a shared role says nothing of the
    person). The local stack's emulator answers any caller with the same
    fake ARN, so there the name is all there is: --operator, else $USER.
    """
    arn = None if local else caller_arn()
    if arn is None:
        return name or "unknown operator"
    return f"{arn} ({name})" if name else arn


def sts_caller_arn() -> str | None:
    try:
        return str(boto3.session.Session().client("sts").get_caller_identity()["Arn"])
    except (BotoCoreError, ClientError, KeyError):
        return None


@dataclass(frozen=True)
class ReopenPolicy:
    """What a placement redrive may reopen, and in whose name."""

    operator: str
    max_age: timedelta = DEFAULT_MAX_AGE
    # Market and stop orders reopen only when named: they fill at whatever the price is now.
    allowed_market_orders: frozenset[str] = frozenset()

    def refusal(self, order: Order, age: timedelta) -> str | None:
        """Why this failed order must not be reopened, or None."""
        if age > self.max_age:
            return (
                f"refused: created {_rough(age)} ago, older than"
                f" --max-age {age_text(self.max_age)} (another trading session): the client, told it failed,"
                " may have sent it again; settle it with them"
            )
        if order.terms.type in _UNPRICED and order.id not in self.allowed_market_orders:
            return (
                f"refused: {_UNPRICED[order.terms.type]} fills at today's price, not the one its client saw;"
                f" name it with --allow-market {order.id} to reopen it"
            )
        return None


# The order types with no limit price: each fills at whatever the market is when it is worked (a stop
# becomes a market order when triggered; a stop_limit, like a limit, is bounded by its limit price).
_UNPRICED = {OrderType.MARKET: "a market order", OrderType.STOP: "a stop order (a market order once triggered)"}


class RedriveFailed(Exception):
    """Records could not be put back on the stream, even after retries."""


_FAILURES = (BotoCoreError, ClientError, StorageUnavailable, QueueUnavailable, RedriveFailed)


class Action(StrEnum):
    REOPENED = "reopened"  # a failed order made pending and sent to the orders queue; message deleted
    REDRIVEN = "redriven"  # execution records put back on the stream; message deleted
    DISCARDED = "discarded"  # nothing left to do (no longer failed, a failed replacement); message deleted
    KEPT = "kept"  # cannot be redriven (yet); the message stays for a person to look at
    REFUSED = "refused"  # too old, or a market or stop order not named: the message stays, the order stays failed
    ERROR = "error"  # an AWS call failed; the message stays and the next run tries again


@dataclass(frozen=True)
class Item:
    """What a redrive did, or in a dry run would do, with one message."""

    queue: str
    message_id: str
    action: Action
    detail: str
    order_id: str | None = None
    records: int = 0  # execution records put back on the stream


@dataclass
class Report:
    dry_run: bool
    placement: list[Item] = field(default_factory=list)
    executions: list[Item] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(1 for item in self.placement + self.executions if item.action is Action.ERROR)

    def to_json(self) -> dict[str, Any]:
        def section(items: list[Item]) -> dict[str, Any]:
            counts = {action.value: sum(1 for item in items if item.action is action) for action in Action}
            return {"counts": counts, "items": [asdict(item) for item in items]}

        return {"dry_run": self.dry_run, "placement": section(self.placement), "executions": section(self.executions)}


@dataclass(frozen=True)
class Decision:
    action: Action
    detail: str
    order_id: str | None = None
    records: int = 0

    @property
    def deletes(self) -> bool:
        return self.action in (Action.REOPENED, Action.REDRIVEN, Action.DISCARDED)


def _drain(
    aws: Aws, queue_name: str, decide: Callable[[Message], Decision], max_messages: int | None, dry_run: bool
) -> list[Item]:
    """Decide on every message of the queue once, deleting those that were dealt with.

    Messages that stay are held (invisible) until the end so that the loop
    does not meet them again, then made visible at once. A message that comes
    round a second time (its hold expired) ends the loop: everything visible
    has been seen. A message's delete comes after its work, so a run killed in
    between leaves it for the next run, and each decision is safe to repeat.
    """
    queue_url = aws.queue_url(queue_name)
    items: list[Item] = []
    seen: set[str] = set()
    held: list[str] = []
    try:
        while max_messages is None or len(items) < max_messages:
            wanted = 10 if max_messages is None else max_messages - len(items)
            batch = receive(aws, queue_url, wanted, HOLD_S)
            fresh = [message for message in batch if message.message_id not in seen]
            held += [message.receipt_handle for message in batch if message.message_id in seen]
            if not fresh:
                break
            for message in fresh:
                seen.add(message.message_id)
                items.append(_handle(aws, queue_name, queue_url, message, decide, dry_run, held))
    finally:
        release(aws, queue_url, held)
    return items


def _handle(
    aws: Aws,
    queue_name: str,
    queue_url: str,
    message: Message,
    decide: Callable[[Message], Decision],
    dry_run: bool,
    held: list[str],
) -> Item:
    try:
        decision = decide(message)
    except _FAILURES as exc:
        decision = Decision(Action.ERROR, f"{type(exc).__name__}: {exc}; the next run tries again")
    if decision.deletes and not dry_run:
        try:
            delete(aws, queue_url, message.receipt_handle)
        except _FAILURES as exc:
            # The work is done and safe to repeat: the next run finds the
            # message again and decides the same (or "discarded").
            decision = Decision(Action.ERROR, f"{decision.detail}; but deleting the message failed: {exc}")
    else:
        held.append(message.receipt_handle)
    return Item(queue_name, message.message_id, decision.action, decision.detail, decision.order_id, decision.records)


# --- Placement DLQ ---


class PlacementRedrive:
    """Decides on one orders-DLQ message: reopen its failed order, or leave it."""

    def __init__(self, target: Target, dependencies: Dependencies, dry_run: bool, policy: ReopenPolicy) -> None:
        self.target = target
        self.dependencies = dependencies
        self.repository = dependencies.orders
        self.dry_run = dry_run
        self.policy = policy
        self.reopened: set[str] = set()

    def __call__(self, message: Message) -> Decision:
        try:
            order_id = parse_order_message(message.body).order_id
        except ValueError as exc:
            return Decision(Action.KEPT, f"not a placement message ({exc}); inspect it and delete it by hand")
        order = self.repository.get(order_id)
        if order is None:
            # Deleting would hide a real problem, e.g. the wrong stage or prefix.
            return Decision(Action.KEPT, f"no such order in {self.target.orders_table}", order_id)
        if order.status is not OrderStatus.FAILED:
            # Reopened by an earlier run (killed before its delete), placed
            # meanwhile, or pending, which the pending sweep looks after.
            return Decision(
                Action.DISCARDED, f"order is {order.status.value}, not failed: nothing to redrive", order_id
            )
        if order.replaces is not None:
            # Final (Order.reopened refuses it): its original was handed back and may have another
            # replace under way, which this one would race at the exchange. Kept, it would be refused on
            # every run; a new replace is the client's to send.
            detail = f"a failed replacement of order {order.replaces}, which works on: never redriven"
            return Decision(Action.DISCARDED, detail, order_id)
        if order_id in self.reopened:
            # Reopened earlier in this run and failed again already: the
            # exchange is still down. Leave it for the next run.
            return Decision(Action.KEPT, f"failed again during this run: {order.failure_reason}", order_id)
        refusal = self.policy.refusal(order, self.dependencies.clock() - order.created_at)
        if refusal is not None:
            return Decision(Action.REFUSED, refusal, order_id)
        if self.dry_run:
            return Decision(Action.REOPENED, f"would reopen (failed: {order.failure_reason})", order_id)
        if reopen_failed_order(order_id, self.dependencies, by=self.policy.operator):
            self.reopened.add(order_id)
            return Decision(Action.REOPENED, f"reopened and sent for placement (was: {order.failure_reason})", order_id)
        now = self.repository.get(order_id)
        if now is not None and now.status is not OrderStatus.FAILED:
            return Decision(Action.DISCARDED, f"order became {now.status.value} meanwhile", order_id)
        return Decision(Action.KEPT, "order changed while reopening it; run the redrive again", order_id)


# --- Executions on-failure queue ---


def read_range(aws: Aws, stream_name: str, shard_id: str, start: str, end: str) -> list[dict[str, Any]]:
    """The shard's records from start to end (sequence numbers, inclusive) still on the stream."""
    try:
        iterator = aws.kinesis.get_shard_iterator(
            StreamName=stream_name,
            ShardId=shard_id,
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=start,
        ).get("ShardIterator")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("InvalidArgumentException", "ResourceNotFoundException"):
            return []  # trimmed past retention, or the shard is gone
        raise
    last = int(end)
    records: list[dict[str, Any]] = []
    for _ in range(GET_RECORDS_MAX_CALLS):
        if not iterator:
            break  # a closed shard, read to its end
        page = aws.kinesis.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
        for record in page.get("Records", []):
            if int(record["SequenceNumber"]) > last:
                return records
            records.append(record)
        if records and int(records[-1]["SequenceNumber"]) >= last:
            return records
        if not page.get("Records"):
            if page.get("MillisBehindLatest", 0) == 0:
                break  # at the tip of the shard: the rest of the range is not there
            time.sleep(GET_RECORDS_PAUSE_S)  # an empty page behind the tip: keep reading, within the rate limit
        iterator = page.get("NextShardIterator")
    return records


def put_back(aws: Aws, stream_name: str, records: list[tuple[str, bytes]]) -> None:
    """Put (partition key, data) records on the stream; raises if some still fail after retries.

    The consumer applies reports in any order and any number of times
    (docs/architecture.md), so neither the new position at the end of the
    shard nor a record put twice by a repeated redrive changes the outcome.
    """
    for start in range(0, len(records), PUT_RECORDS_MAX):
        pending = records[start : start + PUT_RECORDS_MAX]
        for attempt in range(PUT_ATTEMPTS):
            if attempt:
                time.sleep(0.2 * 2**attempt)  # throttling is per shard and per second
            response = aws.kinesis.put_records(
                StreamName=stream_name, Records=[{"PartitionKey": key, "Data": data} for key, data in pending]
            )
            # Only the records with an error code failed; the others are on the stream.
            pending = [
                record for record, result in zip(pending, response["Records"], strict=True) if result.get("ErrorCode")
            ]
            if not pending:
                break
        if pending:
            raise RedriveFailed(f"{len(pending)} records could not be put on {stream_name}")


class ExecutionsRedrive:
    """Decides on one executions-failed message: put its records back on the stream, or leave it."""

    def __init__(self, target: Target, aws: Aws, repository: OrderRepository, dry_run: bool) -> None:
        self.target = target
        self.aws = aws
        self.repository = repository
        self.dry_run = dry_run

    def __call__(self, message: Message) -> Decision:
        parsed = parse_failed_execution(message)
        if isinstance(parsed, FailedBatch):
            return self._batch(parsed)
        if isinstance(parsed, ParkedReport):
            return self._report(parsed)
        return Decision(Action.KEPT, "neither a Lambda on-failure record nor a parked report; inspect it by hand")

    def _other_stream(self, stream_name: str | None) -> Decision | None:
        if stream_name is not None and stream_name != self.target.executions_stream:
            return Decision(Action.KEPT, f"from stream {stream_name}, not {self.target.executions_stream}")
        return None

    def _batch(self, batch: FailedBatch) -> Decision:
        other = self._other_stream(batch.stream_name)
        if other is not None:
            return other
        stream = self.target.executions_stream
        where = f"{batch.shard_id} {batch.start}..{batch.end}"
        records = read_range(self.aws, stream, batch.shard_id, batch.start, batch.end)
        if not records:
            return Decision(Action.KEPT, f"records {where} are not on the stream (trimmed after its retention period?)")
        missing = ""
        if batch.batch_size is not None and len(records) < batch.batch_size:
            missing = f"; {batch.batch_size - len(records)} of {batch.batch_size} are no longer on the stream"
        keys = sorted({str(record["PartitionKey"]) for record in records})
        order_id = keys[0] if len(keys) == 1 else None
        if self.dry_run:
            return Decision(Action.REDRIVEN, f"would put back {len(records)} records {where}{missing}", order_id, 0)
        put_back(self.aws, stream, [(str(r["PartitionKey"]), bytes(r["Data"])) for r in records])
        detail = f"put back {len(records)} records {where} (orders {', '.join(keys)}){missing}"
        return Decision(Action.REDRIVEN, detail, order_id, len(records))

    def _report(self, report: ParkedReport) -> Decision:
        other = self._other_stream(report.stream_name)
        if other is not None:
            return other
        order_id = report.unknown_order_id
        if order_id is None:
            # A malformed report fails the same way every time it is read.
            return Decision(Action.KEPT, f"cannot succeed on a retry: {report.reason}", report.partition_key)
        if self.repository.get(order_id) is None:
            return Decision(Action.KEPT, f"order {order_id} still unknown", order_id)
        if self.dry_run:
            return Decision(Action.REDRIVEN, "would put the report back: its order exists now", order_id)
        put_back(self.aws, self.target.executions_stream, [(report.partition_key, base64.b64decode(report.data))])
        return Decision(Action.REDRIVEN, "put the report back: its order exists now", order_id, 1)


def redrive(
    target: Target, aws: Aws, policy: ReopenPolicy, dry_run: bool = False, max_messages: int | None = None
) -> Report:
    """Both queues, the placement DLQ first; max_messages applies to each queue."""
    # One set of adapters for the reads and the reopen writes, built from the target's settings.
    dependencies = bootstrap.production()
    report = Report(dry_run)
    report.placement = _drain(
        aws, target.orders_dlq, PlacementRedrive(target, dependencies, dry_run, policy), max_messages, dry_run
    )
    report.executions = _drain(
        aws,
        target.executions_failed_queue,
        ExecutionsRedrive(target, aws, dependencies.orders, dry_run),
        max_messages,
        dry_run,
    )
    return report
