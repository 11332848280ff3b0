"""In-memory fakes of the adapters, and the Dependencies made of them that unit tests hand the services and the app."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from chalicelib.adapters.api_keys import ApiKeyAlreadyExists
from chalicelib.adapters.exchange import (
    CancelOutcome,
    ExchangeAck,
    ExchangeRejected,
    ExchangeUnavailable,
    ReplaceTooLate,
)
from chalicelib.adapters.orders_table import LIST_MAX_ITEMS_READ
from chalicelib.adapters.queue import QueueUnavailable
from chalicelib.adapters.reference_prices import ReferencePriceUnavailable
from chalicelib.adapters.repository import (
    ConcurrentModification,
    ExecutionCursor,
    ExecutionPage,
    OrderAlreadyExists,
    OrderCursor,
    OrderPage,
    OrderQuery,
    ReconcileCursor,
    StorageUnavailable,
    execution_page,
)
from chalicelib.clock import utc_now
from chalicelib.domain.accounts import ApiKey
from chalicelib.domain.model import OPEN_STATUSES, ExecutionReport, Order, OrderStatus, VenueOrderState
from chalicelib.domain.rate_limits import AccountRateLimit, RateLimit, UsageKey
from chalicelib.domain.retry import RetryPolicy
from chalicelib.domain.risk import AccountLimits, RiskLimits
from chalicelib.service.dependencies import Dependencies, RiskSources, StreamSources, Timings
from tests.unit.fakes_streaming import (
    FakeConnectionPusher,
    FakeOrderEventLog,
    FakeStreamConnections,
    FakeStreamTokens,
)

# What the unit tests' services run with unless a test says otherwise.
POLICY = RetryPolicy(max_attempts=3, backoff_base_s=2, backoff_max_s=900)
SWEEP = timedelta(seconds=60)
LEASE = timedelta(seconds=15)
TIMINGS = Timings(pending_sweep_after=SWEEP, placement_lease=LEASE)


class FakeRepository:
    def __init__(self, list_max_items_read: int = LIST_MAX_ITEMS_READ) -> None:
        self.list_max_items_read = list_max_items_read  # as the adapter's: see list_for_account
        self.orders: dict[str, Order] = {}
        self.sweep_after: dict[str, datetime] = {}
        self.down = False
        self.writes = 0
        self.unreconciled: set[str] = set()  # failed orders the reconciler dropped
        self.open_counts = 0  # count_open calls

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailable("down")

    def add(self, order: Order, sweep_after: datetime) -> Order:
        self._check()
        if order.id in self.orders:
            raise OrderAlreadyExists(order.id)
        stored = dataclasses.replace(order, version=1)
        self.orders[order.id] = stored
        self.sweep_after[order.id] = sweep_after
        self.writes += 1
        return stored

    def add_replacement(self, replacement: Order, original: Order, sweep_after: datetime) -> tuple[Order, Order]:
        self._check()
        if replacement.id in self.orders:
            raise OrderAlreadyExists(replacement.id)
        if self.orders[original.id].version != original.version:
            raise ConcurrentModification(original.id)
        stored = self.add(replacement, sweep_after)
        self.writes -= 1  # one transaction: one write
        return stored, self.update(original, sweep_after=None)

    def get(self, order_id: str) -> Order | None:
        self._check()
        return self.orders.get(order_id)

    def get_many(self, order_ids: list[str]) -> dict[str, Order]:
        self._check()
        return {order_id: self.orders[order_id] for order_id in order_ids if order_id in self.orders}

    def update(self, order: Order, sweep_after: datetime | None) -> Order:
        self._check()
        current = self.orders[order.id]
        if current.version != order.version:
            raise ConcurrentModification(order.id)
        stored = dataclasses.replace(order, version=order.version + 1)
        self.orders[order.id] = stored
        # As the DynamoDB adapter: orders owed work keep (or get) a sweep time.
        if stored.needs_work and sweep_after is not None:
            self.sweep_after[order.id] = sweep_after
        elif not stored.needs_work:
            self.sweep_after.pop(order.id, None)
        self.writes += 1
        return stored

    def pending_due_for_sweep(self, now: datetime, limit: int) -> list[str]:
        self._check()
        due = sorted((at, order_id) for order_id, at in self.sweep_after.items() if at < now)
        return [order_id for _, order_id in due[:limit]]

    def due_for_reconcile(
        self, cursor: ReconcileCursor | None, limit: int
    ) -> tuple[list[ReconcileCursor], ReconcileCursor]:
        # One shard, in id order: the adapter's contract without its sharding.
        self._check()
        after = cursor.after_id if cursor is not None else None
        due = sorted(
            order_id
            for order_id, order in self.orders.items()
            if order_id not in self.unreconciled
            and (order.status in OPEN_STATUSES or order.status is OrderStatus.FAILED)
            and (after is None or order_id > after)
        )
        page = [ReconcileCursor(0, order_id) for order_id in due[:limit]]
        return page, page[-1] if len(due) > limit else ReconcileCursor(0, None)

    def stop_reconciling(self, order: Order) -> None:
        self._check()
        current = self.orders[order.id]
        if current.status is OrderStatus.FAILED and current.version == order.version:
            self.orders[order.id] = dataclasses.replace(current, version=current.version + 1)
            self.unreconciled.add(order.id)

    def list_for_account(self, query: OrderQuery) -> OrderPage:
        self._check()
        mine = sorted(
            (o for o in self.orders.values() if o.account_id == query.account_id),
            key=lambda o: (o.created_at, o.id),
            reverse=True,
        )
        if query.cursor is not None:
            after = (query.cursor.created_at, query.cursor.order_id)
            mine = [o for o in mine if (o.created_at, o.id) < after]
        # As DynamoDB: the time range is the key condition (what is read), the rest filters what was read,
        # and the adapter reads at most list_max_items_read items per page.
        mine = [
            o
            for o in mine
            if (query.created_after is None or o.created_at > query.created_after)
            and (query.created_before is None or o.created_at < query.created_before)
        ]
        read = mine[: self.list_max_items_read]
        matching = [
            o
            for o in read
            if (query.statuses is None or o.status in query.statuses)
            and (query.instrument is None or o.terms.instrument == query.instrument)
            and (query.side is None or o.terms.side is query.side)
        ]
        page = matching[: query.limit]
        if len(matching) > query.limit:
            return OrderPage(page, OrderCursor(page[-1].created_at, page[-1].id))
        if len(read) < len(mine):  # stopped at the cap: go on after the last order read
            return OrderPage(page, OrderCursor(read[-1].created_at, read[-1].id))
        return OrderPage(page, None)

    def count_open(self, account_id: str, stop_at: int) -> int:
        self._check()
        self.open_counts += 1
        mine = sum(1 for o in self.orders.values() if o.account_id == account_id and o.status in OPEN_STATUSES)
        return min(mine, max(stop_at, 0))

    def open_order_ids(self, account_id: str, after: str | None, limit: int) -> list[str]:
        self._check()
        mine = sorted(
            o.id
            for o in self.orders.values()
            if o.account_id == account_id and o.status in OPEN_STATUSES and (after is None or o.id > after)
        )
        return mine[: max(limit, 0)]


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.delays: list[int] = []  # of each placement request, in order
        self.cancels: list[str] = []
        self.visibility: dict[str, int] = {}
        self.down = False

    def request_placement(self, order_id: str, correlation_id: str | None = None, delay_s: int = 0) -> None:
        if self.down:
            raise QueueUnavailable("down")
        self.sent.append(order_id)
        self.delays.append(delay_s)

    def request_cancel(self, order_id: str, correlation_id: str | None = None) -> None:
        if self.down:
            raise QueueUnavailable("down")
        self.cancels.append(order_id)

    def retry_after(self, receipt_handle: str, delay_s: int) -> None:
        self.visibility[receipt_handle] = delay_s


class FakeExchange:
    """Scripted answers, then accepts; remembers client order ids like the real venue."""

    def __init__(self, script: list[str] | None = None, cancel_script: list[str] | None = None) -> None:
        self.script = list(script or [])
        self.cancel_script = list(cancel_script or [])
        self.accepted: dict[str, str] = {}
        self.canceled: set[str] = set()
        self.calls: list[str] = []
        self.cancel_calls: list[str] = []
        # Runs inside place(), as if the exchange were still working on it:
        # lets a test do something while an attempt is in flight.
        self.during_place: list[object] = []
        # Status answers: "unavailable" raises; otherwise the order's state
        # (a test may set one in states), or PLACED with nothing filled.
        self.status_script: list[str] = []
        self.states: dict[str, VenueOrderState] = {}
        self.status_calls: list[str] = []

    def place(self, order: Order) -> ExchangeAck:
        self.calls.append(order.id)
        while self.during_place:
            action = self.during_place.pop(0)
            assert callable(action)
            action()
        step = self.script.pop(0) if self.script else "accept"
        if step == "unavailable":
            raise ExchangeUnavailable("connection not available")
        if step == "reject":
            raise ExchangeRejected("unknown instrument")
        if step == "too_late":
            raise ReplaceTooLate("too late to replace: order is filled")
        if order.id in self.accepted:
            if step == "lost":
                raise ExchangeUnavailable("connection reset")
            return ExchangeAck(self.accepted[order.id], duplicate=True)
        self.accepted[order.id] = f"X{len(self.accepted) + 1}"
        if step == "lost":  # accepted, and the answer lost on the way back
            raise ExchangeUnavailable("connection reset")
        return ExchangeAck(self.accepted[order.id])

    def status(self, order_id: str) -> VenueOrderState | None:
        self.status_calls.append(order_id)
        step = self.status_script.pop(0) if self.status_script else "answer"
        if step == "unavailable":
            raise ExchangeUnavailable("status query: HTTP 503")
        if order_id in self.states:
            return self.states[order_id]
        if order_id not in self.accepted:
            return None
        return VenueOrderState(self.accepted[order_id], OrderStatus.PLACED, 0, 0, None)

    def cancel(self, order_id: str) -> CancelOutcome:
        self.cancel_calls.append(order_id)
        step = self.cancel_script.pop(0) if self.cancel_script else "answer"
        if step == "unavailable":
            raise ExchangeUnavailable("connection not available")
        if order_id not in self.accepted:
            return CancelOutcome.UNKNOWN_ORDER
        if order_id in self.canceled:
            return CancelOutcome.TOO_LATE
        self.canceled.add(order_id)
        return CancelOutcome.CANCEL_ACCEPTED


class FakeExecutions:
    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], ExecutionReport] = {}
        self.down = False
        self.listed: list[str] = []  # the order ids list_for_order was asked about, in call order

    def add_many(self, reports: list[ExecutionReport]) -> None:
        if self.down:
            raise StorageUnavailable("down")
        for report in reports:
            self.stored[(report.order_id, report.exec_id)] = report

    def list_for_order(self, order_id: str) -> list[ExecutionReport]:
        self.listed.append(order_id)
        found = [r for (oid, _), r in self.stored.items() if oid == order_id]
        return sorted(found, key=lambda r: (r.transact_time, r.seq))

    def page_for_order(self, order_id: str, after: ExecutionCursor | None, limit: int) -> ExecutionPage:
        if self.down:
            raise StorageUnavailable("down")
        # The adapter's own paging over what the table holds (see DynamoDBExecutionRepository).
        return execution_page(self.list_for_order(order_id), after, limit)


class FakeApiKeyRepository:
    """In memory, with the repository's contract: conditional add, revoke keeps the first time."""

    def __init__(self) -> None:
        self.keys: dict[str, ApiKey] = {}
        self.down = False
        self.reads = 0
        self.taken: set[str] = set()  # key ids add() refuses, as if stored already
        self.use_writes = 0  # record_use() calls, each a conditional write on the table
        self.record_use_down = False  # only record_use() fails (reads still work)

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailable("down")

    def add(self, key: ApiKey) -> None:
        self._check()
        if key.key_id in self.keys or key.key_id in self.taken:
            raise ApiKeyAlreadyExists(key.key_id)
        self.keys[key.key_id] = key

    def get(self, key_id: str) -> ApiKey | None:
        self._check()
        self.reads += 1
        return self.keys.get(key_id)

    def revoke(self, key_id: str, at: datetime) -> ApiKey | None:
        self._check()
        if key_id not in self.keys:
            return None
        self.keys[key_id] = self.keys[key_id].revoked(at)
        return self.keys[key_id]

    def record_use(self, key_id: str, now: datetime) -> bool:
        self._check_use()
        self.use_writes += 1
        key = self.keys.get(key_id)
        if key is None or not key.last_use_is_stale(now):
            return False  # the table's condition: the key exists, its last use a minute old or more
        self.keys[key_id] = dataclasses.replace(key, last_used_at=now)
        return True

    def _check_use(self) -> None:
        self._check()
        if self.record_use_down:
            raise StorageUnavailable("down for writes")

    def list_for_account(self, account_id: str) -> list[ApiKey]:
        self._check()
        return sorted((k for k in self.keys.values() if k.account_id == account_id), key=lambda k: k.created_at)


class FakeMessageSender:
    """A queue that only receives (the executions on-failure queue, the orders DLQ)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.down = False

    def send(self, body: str) -> None:
        if self.down:
            raise QueueUnavailable("down")
        self.sent.append(body)


# What the unit tests' accounts may do unless a test sets limits: far more than any of them
# asks, so only the tests of the risk limits meet them.
GENEROUS_LIMITS = RiskLimits(max_order_notional=Decimal("1e15"), max_open_orders=1_000_000, max_order_quantity=10**9)


class FakeAccountLimits:
    """The operator's per-account limits in memory."""

    def __init__(self) -> None:
        self.limits: dict[str, AccountLimits] = {}
        self.down = False
        self.reads = 0

    def get(self, account_id: str) -> AccountLimits:
        if self.down:
            raise StorageUnavailable("down")
        self.reads += 1
        return self.limits.get(account_id, AccountLimits())

    def set(self, account_id: str, limits: AccountLimits) -> AccountLimits:
        if self.down:
            raise StorageUnavailable("down")
        current = self.limits.get(account_id, AccountLimits())
        changes = {name: value for name, value in vars(limits).items() if value is not None}
        self.limits[account_id] = dataclasses.replace(current, **changes)
        return self.limits[account_id]


class FakeAccountRateLimits:
    """Accounts' request rate limits and usage keys in memory (AccountRateLimitsStore)."""

    def __init__(self) -> None:
        self.accounts: dict[str, AccountRateLimit] = {}
        self.down = False
        self.reads = 0

    def get(self, account_id: str) -> AccountRateLimit:
        if self.down:
            raise StorageUnavailable("down")
        self.reads += 1
        return self.accounts.get(account_id, AccountRateLimit())

    def set_limit(self, account_id: str, limit: RateLimit | None) -> AccountRateLimit:
        return self._replace(account_id, own=limit)

    def set_usage_key(self, account_id: str, usage_key: UsageKey) -> AccountRateLimit:
        return self._replace(account_id, usage_key=usage_key)

    def _replace(self, account_id: str, **changes: Any) -> AccountRateLimit:
        if self.down:
            raise StorageUnavailable("down")
        self.accounts[account_id] = dataclasses.replace(self.accounts.get(account_id, AccountRateLimit()), **changes)
        return self.accounts[account_id]


class FakeReferencePrices:
    """The venue's reference prices: a test sets them; an instrument without one is unavailable."""

    def __init__(self, prices: dict[str, Decimal] | None = None, default: Decimal | None = Decimal("100")) -> None:
        self.prices = dict(prices or {})
        self.default = default  # for any other instrument; None: unavailable
        self.asked: list[str] = []

    def price_of(self, instrument: str) -> Decimal:
        self.asked.append(instrument)
        price = self.prices.get(instrument, self.default)
        if price is None:
            raise ReferencePriceUnavailable(f"no reference price of {instrument}")
        return price


class FakeCursorStore:
    def __init__(self) -> None:
        self.position: str | None = None
        self.saves = 0

    def load(self) -> str | None:
        return self.position

    def save(self, position: str) -> None:
        self.position = position
        self.saves += 1


@dataclass
class Fakes:
    """One in-memory world; dependencies() hands it to the services or the app, the fakes stay here to look at."""

    orders: FakeRepository = field(default_factory=FakeRepository)
    queue: FakeQueue = field(default_factory=FakeQueue)
    exchange: FakeExchange = field(default_factory=FakeExchange)
    executions: FakeExecutions = field(default_factory=FakeExecutions)
    failed_queue: FakeMessageSender = field(default_factory=FakeMessageSender)
    order_events_failed: FakeMessageSender = field(default_factory=FakeMessageSender)
    api_keys: FakeApiKeyRepository = field(default_factory=FakeApiKeyRepository)
    dead_letters: FakeMessageSender = field(default_factory=FakeMessageSender)
    cursor: FakeCursorStore = field(default_factory=FakeCursorStore)
    account_limits: FakeAccountLimits = field(default_factory=FakeAccountLimits)
    rate_limits: FakeAccountRateLimits = field(default_factory=FakeAccountRateLimits)
    reference_prices: FakeReferencePrices = field(default_factory=FakeReferencePrices)
    event_log: FakeOrderEventLog = field(default_factory=FakeOrderEventLog)
    connections: FakeStreamConnections = field(default_factory=FakeStreamConnections)
    stream_tokens: FakeStreamTokens = field(default_factory=FakeStreamTokens)
    pusher: FakeConnectionPusher = field(default_factory=FakeConnectionPusher)
    risk_defaults: RiskLimits = GENEROUS_LIMITS
    clock: Callable[[], datetime] = utc_now
    policy: RetryPolicy = POLICY
    timings: Timings = TIMINGS
    # Seeded afresh for every dependencies(): the same delays every time.
    jitter_seed: int | None = 0
    # What the services waited, in seconds: recorded, never slept.
    sleeps: list[float] = field(default_factory=list)

    def dependencies(self) -> Dependencies:
        return Dependencies(
            orders=self.orders,
            orders_queue=self.queue,
            exchange=self.exchange,
            retry_policy=self.policy,
            timings=self.timings,
            executions=self.executions,
            executions_failed_queue=self.failed_queue,
            order_events_failed_queue=self.order_events_failed,
            api_keys=self.api_keys,
            account_rate_limits=self.rate_limits,
            orders_dead_letter_queue=self.dead_letters,
            reconciler_cursor=self.cursor,
            risk=RiskSources(self.account_limits, self.reference_prices, self.risk_defaults),
            stream=StreamSources(self.event_log, self.connections, self.stream_tokens, self.pusher),
            clock=self.clock,
            jitter=None if self.jitter_seed is None else random.Random(self.jitter_seed),
            sleep=self.sleeps.append,
        )
