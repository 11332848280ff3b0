"""What the use cases work with, as one object: the adapters behind their interfaces, the retry policy, the clock and
the timings. chalicelib/bootstrap.py builds the production one; tests build theirs from fakes."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from chalicelib.adapters.accounts_table import AccountLimitsRepository, AccountRateLimitsRepository
from chalicelib.adapters.api_keys import ApiKeyRepository
from chalicelib.adapters.exchange import Exchange
from chalicelib.adapters.queue import MessageSender, OrdersQueue
from chalicelib.adapters.reference_prices import ReferencePrices
from chalicelib.adapters.repository import CursorStore, ExecutionRepository, OrderRepository
from chalicelib.adapters.streaming import ConnectionPusher, OrderEventLog, StreamConnections, StreamTokens
from chalicelib.clock import Clock, utc_now
from chalicelib.domain.retry import RetryPolicy
from chalicelib.domain.risk import RiskLimits


@dataclass(frozen=True)
class Timings:
    """How long the use cases give things."""

    # PENDING_SWEEP_AFTER_S: an order owed work (placement or cancel request)
    # this long past its last sign of progress is sent again by the sweep.
    pending_sweep_after: timedelta
    # From before a placement attempt claims an order until nothing that
    # attempt sent can still reach the exchange (see bootstrap.placement_lease).
    placement_lease: timedelta
    # The longest one exchange call can take (connect + read): an attempt
    # whose lease has less than this left does not send (see placement.py).
    exchange_call: timedelta = timedelta(seconds=12)
    # From the start of a create whose write lost its answer, how long it
    # keeps asking the table whether the order was stored before it answers
    # 500 not knowing. Under the API function's timeout (10 s), leaving room
    # for one last look-up.
    write_read_back: timedelta = timedelta(seconds=5)
    # CANCEL_RESEND_INTERVAL_S: at most one cancel request per order per this
    # long, queued by the API and sent by the worker (see exchange_cancel.py).
    cancel_resend_interval: timedelta = timedelta(seconds=5)
    # DELETE /orders (cancel them all) starts no new cancel this long after
    # it began, and answers with the rest still to do: well under the API
    # function's timeout (10 s), a cancel costing a few table writes and a send.
    cancel_all_budget: timedelta = timedelta(seconds=5)


@dataclass(frozen=True)
class RiskSources:
    """What the pre-trade risk check of a new order reads (service/pre_trade_risk.py)."""

    account_limits: AccountLimitsRepository  # what the operator set per account (cached briefly)
    reference_prices: ReferencePrices  # market orders' prices, from the venue
    defaults: RiskLimits  # for every limit an account has not set (settings DEFAULT_MAX_*)


@dataclass(frozen=True)
class StreamSources:
    """The live order events: the accounts' event logs and the WebSocket stream (docs/architecture.md)."""

    event_log: OrderEventLog
    connections: StreamConnections
    tokens: StreamTokens
    pusher: ConnectionPusher  # API Gateway's management API: posts to and closes connections
    retention: timedelta = timedelta(days=8)  # ORDER_EVENTS_RETENTION_DAYS: events kept at least 7 days
    token_ttl: timedelta = timedelta(minutes=5)  # STREAM_TOKEN_TTL_S


@dataclass(frozen=True)
class Dependencies:
    orders: OrderRepository
    orders_queue: OrdersQueue
    exchange: Exchange
    retry_policy: RetryPolicy
    timings: Timings
    executions: ExecutionRepository
    # Where the execution consumer sets aside reports that can never apply.
    executions_failed_queue: MessageSender
    # Where the orders table's stream consumer sets aside records whose events can never be logged.
    order_events_failed_queue: MessageSender
    api_keys: ApiKeyRepository
    # Accounts' request rate limits and usage keys (cached briefly): the authorizer's usage identifier.
    account_rate_limits: AccountRateLimitsRepository
    # Where the placement worker puts the message of an order the exchange confirmed it never got.
    orders_dead_letter_queue: MessageSender
    # Where the reconciler left off last run.
    reconciler_cursor: CursorStore
    # Pre-trade risk limits, checked before a new order is stored.
    risk: RiskSources
    # The order event log and the WebSocket stream's connections.
    stream: StreamSources
    clock: Clock = utc_now
    # Jitter of the retry delays; None is one generator shared by the process.
    jitter: random.Random | None = None
    # Waiting between look-ups; tests pass one that only records.
    sleep: Callable[[float], None] = time.sleep
