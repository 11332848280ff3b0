"""Orders and their life cycle; pure, no I/O."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from chalicelib.domain.order_ids import is_order_id as is_order_id  # noqa: PLC0414
from chalicelib.domain.order_ids import new_order_id as new_order_id  # noqa: PLC0414
from chalicelib.domain.order_ids import order_id_for_client_key as order_id_for_client_key  # noqa: PLC0414

# The terms live in their own module; these names stay importable from here,
# where most of the code has always taken them ("X as X" marks a re-export).
from chalicelib.domain.order_terms import OrderTerms as OrderTerms  # noqa: PLC0414
from chalicelib.domain.order_terms import OrderType as OrderType  # noqa: PLC0414
from chalicelib.domain.order_terms import Side as Side  # noqa: PLC0414
from chalicelib.domain.order_terms import TimeInForce as TimeInForce  # noqa: PLC0414


class OrderStatus(StrEnum):
    PENDING = "pending"
    PLACED = "placed"
    PARTIALLY_FILLED = "partially_filled"
    # The client asked to replace an order the exchange holds (FIX 35=G); the
    # replacement order, pending, carries the request (domain/replace.py).
    PENDING_REPLACE = "pending_replace"
    # The client asked to cancel an order the exchange may hold; the
    # exchange's answer comes through the execution feed.
    PENDING_CANCEL = "pending_cancel"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"
    # The exchange confirmed a replace: the replacement order (replaced_by) works on.
    REPLACED = "replaced"


_DONE_AT_THE_EXCHANGE = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED, OrderStatus.REPLACED}
)
# How an order that has fills may end: every way but a rejection, which only comes at entry.
_DONE_AFTER_FILLS = _DONE_AT_THE_EXCHANGE - {OrderStatus.REJECTED}

# The one place that says which status may follow which. Every move goes up
# FIX's order-state precedence (pending < placed/new < partially filled <
# pending replace < pending cancel < done), and terminal statuses lead nowhere. Because no move
# goes down, applying an order's execution reports in any order, with any
# duplicates, ends in the same status: that is what makes the execution
# consumer safe against a feed that repeats or reorders, and against the race
# between the placement handler (pending -> placed) and an early fill
# (pending -> filled). No execution report leads to pending_cancel (only a
# client's cancel does), and from it only the exchange's final word leads on:
# a partial fill arriving after the cancel request updates the quantities but
# leaves the order pending_cancel. pending_replace works the same way: only a
# client's replace leads to it (from an order the exchange has accepted), fills
# leave it pending_replace, and a cancel may overtake it; whichever of the
# cancel and the replace the exchange took first ends it (canceled or replaced).
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(
        {OrderStatus.PLACED, OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_CANCEL, OrderStatus.FAILED}
        | _DONE_AT_THE_EXCHANGE
    ),
    OrderStatus.PLACED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_REPLACE, OrderStatus.PENDING_CANCEL} | _DONE_AT_THE_EXCHANGE
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {OrderStatus.PENDING_REPLACE, OrderStatus.PENDING_CANCEL} | _DONE_AFTER_FILLS
    ),
    OrderStatus.PENDING_REPLACE: frozenset({OrderStatus.PENDING_CANCEL} | _DONE_AFTER_FILLS),
    OrderStatus.PENDING_CANCEL: frozenset(_DONE_AT_THE_EXCHANGE),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
    OrderStatus.FAILED: frozenset(),
    OrderStatus.REPLACED: frozenset(),
}
TERMINAL_STATUSES = frozenset(status for status, targets in TRANSITIONS.items() if not targets)
OPEN_STATUSES = frozenset(TRANSITIONS) - TERMINAL_STATUSES

# Moves no event of the system makes, only an operator's redrive: an order
# that failed because the exchange was unreachable is opened again and
# placed anew. Kept apart so that "terminal" above stays true for every
# automatic path, including execution reports, which can never reopen one.
OPERATOR_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.FAILED: frozenset({OrderStatus.PENDING}),
}

# The one move down the precedence, kept apart like the operator's: a replace
# the exchange refused, or that never reached it, hands the original back to
# where its own reports put it. Only the end of the replacement order makes it
# (Order.replace_refused), never an execution report, so the merge of reports
# stays order-independent; and it lands exactly where the reports would have
# left the order without the replace (placed, or partially filled if it has fills).
REPLACE_REFUSAL_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING_REPLACE: frozenset({OrderStatus.PLACED, OrderStatus.PARTIALLY_FILLED}),
}


# Moves only the exchange's word makes, kept apart from the table above for the
# same reason: an order we recorded failed (its placement looked lost) that the
# exchange did accept. Its execution reports or its status at the exchange
# move it to the exchange's state, as if it had never failed; each such move is
# a correction, logged as an error and counted (OrdersCorrected). Rejected is
# not among them: the exchange refusing the order agrees with "failed".
CORRECTION_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.FAILED: frozenset(
        {OrderStatus.PLACED, OrderStatus.PARTIALLY_FILLED} | (_DONE_AT_THE_EXCHANGE - {OrderStatus.REJECTED})
    ),
}


def can_transition(source: OrderStatus, target: OrderStatus) -> bool:
    return target in TRANSITIONS[source]


class OrderError(Exception):
    """Base of the domain's errors."""


class OrderNotFound(OrderError):
    pass


class IdempotencyConflict(OrderError):
    """The client order id is already used by an order with different terms."""


class OrderNotReplaceable(OrderError):
    """The order cannot be replaced now: done, not yet at the exchange, or a cancel or replace already pending."""

    def __init__(self, order_id: str, status: OrderStatus) -> None:
        self.why = _NOT_REPLACEABLE_BECAUSE.get(status, "only open orders can be replaced")
        super().__init__(f"order {order_id} is {status}: {self.why}")
        self.status = status


_NOT_REPLACEABLE_BECAUSE = {
    # Not yet accepted: the exchange has nothing to replace, and a replace
    # racing the order's own placement could reach it first.
    OrderStatus.PENDING: "it can be replaced once the exchange has accepted it",
    OrderStatus.PENDING_REPLACE: "a replace of it is pending already",
    OrderStatus.PENDING_CANCEL: "a cancel of it is pending",
}


class OrderNotCancelable(OrderError):
    """The order is done; there is nothing left to cancel."""

    def __init__(self, order_id: str, status: OrderStatus) -> None:
        super().__init__(f"order {order_id} is {status}: only open orders can be canceled")
        self.status = status


class InvalidTransition(OrderError):
    def __init__(self, source: OrderStatus, target: OrderStatus) -> None:
        super().__init__(f"an order cannot go from {source} to {target}")
        self.source = source
        self.target = target


class ExecType(StrEnum):
    NEW = "new"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    REPLACED = "replaced"  # the original of a confirmed cancel/replace: done, its replacement works on


STATUS_AFTER: dict[ExecType, OrderStatus] = {
    ExecType.NEW: OrderStatus.PLACED,
    ExecType.PARTIAL_FILL: OrderStatus.PARTIALLY_FILLED,
    ExecType.FILL: OrderStatus.FILLED,
    ExecType.CANCELED: OrderStatus.CANCELED,
    ExecType.REJECTED: OrderStatus.REJECTED,
    ExecType.EXPIRED: OrderStatus.EXPIRED,
    ExecType.REPLACED: OrderStatus.REPLACED,
}


@dataclass(frozen=True)
class ExecutionReport:
    """One execution report from the exchange's feed (see docs/execution-feed.md)."""

    exec_id: str
    order_id: str  # our order id, which the exchange knows as the client order id
    exchange_order_id: str
    exec_type: ExecType
    last_qty: int
    last_price: Decimal | None
    cum_qty: int
    leaves_qty: int
    avg_price: Decimal | None
    transact_time: datetime
    seq: int

    @property
    def fill_progress(self) -> tuple[int, Decimal]:
        """Orders reports by how much they know: the highest cumulative quantity wins.

        Ties (e.g. the last fill and a cancel carry the same cum_qty) go to the
        higher average price so that the choice never depends on arrival order.
        """
        return (self.cum_qty, self.avg_price if self.avg_price is not None else Decimal(-1))


@dataclass(frozen=True)
class VenueOrderState:
    """The exchange's answer to an order status query (FIX OrderStatusRequest, 35=H) about an order it holds."""

    exchange_order_id: str | None  # None only where an acceptance said no more than "accepted"
    status: OrderStatus  # one of STATUS_AFTER's values: placed, partially_filled, filled, canceled, ...
    cum_qty: int
    leaves_qty: int
    avg_price: Decimal | None

    @property
    def fill_progress(self) -> tuple[int, Decimal]:
        """Comparable with ExecutionReport.fill_progress: the same merge takes both."""
        return (self.cum_qty, self.avg_price if self.avg_price is not None else Decimal(-1))


# What the exchange has said about an order, from a report or a status answer:
# the status it leads to, how far it is filled, the exchange's order id.
_Observation = tuple[OrderStatus, tuple[int, Decimal], str | None]


class PlacementStage(StrEnum):
    """Where an order's placement stands from our side: what a cancel may conclude without asking the exchange."""

    NEVER_SENT = "never_sent"  # no attempt ever claimed it: the exchange cannot have it
    AT_THE_EXCHANGE = "at_the_exchange"  # an attempt holds the lease: it is calling the exchange right now
    # No attempt holds it, but something we sent (a call that timed out, its
    # answer lost) may still reach the exchange until placement_quiet_at.
    MAY_STILL_LAND = "may_still_land"
    QUIET = "quiet"  # sent before, and nothing we sent can still arrive: the exchange's word is final


_SENT_AND_MAY_STILL_LAND = frozenset({PlacementStage.AT_THE_EXCHANGE, PlacementStage.MAY_STILL_LAND})


@dataclass(frozen=True)
class Reopening:
    """One operator's redrive of a failed order: when, by whom, and what it had failed with."""

    at: datetime
    by: str  # the operator's identity (an STS caller ARN, or a name), never shown to clients
    earlier_failure: str | None


@dataclass(frozen=True)
class Order:
    id: str
    account_id: str  # the owner: every read and change is on its behalf
    terms: OrderTerms
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    placed_at: datetime | None = None
    exchange_order_id: str | None = None
    failure_reason: str | None = None
    last_error: str | None = None
    filled_quantity: int = 0
    average_fill_price: Decimal | None = None
    # Names the request that created the order in every log line about it.
    correlation_id: str | None = None
    # Set while a placement attempt holds the order (a lease: it runs out by
    # itself if that worker dies); a second delivery leaves the order alone.
    placing_until: datetime | None = None
    # When nothing we ever sent to the exchange for this order can still
    # reach it: set by every claim, only ever moved later, never cleared
    # (not by a retry, nor by an operator's reopen). None = never sent, the
    # only case in which a cancel may settle the order without the exchange.
    placement_quiet_at: datetime | None = None
    # When a cancel request for this pending_cancel order was last queued (by
    # the client's DELETE) and last sent to the exchange (by the cancel
    # worker): each goes out at most once per resend interval, so a client
    # looping on DELETE floods neither the orders queue nor the venue.
    cancel_queued_at: datetime | None = None
    cancel_sent_at: datetime | None = None
    # Every operator reopening (redrive) of this order, oldest first.
    reopenings: tuple[Reopening, ...] = ()
    # A replace (domain/replace.py): the replacement names the order it
    # replaces (FIX OrigClOrdID); the original names its replacement from the
    # client's request on (pending_replace), and keeps it once replaced.
    replaces: str | None = None
    replaced_by: str | None = None
    # Optimistic concurrency, as in cosmicpython's aggregates: storage accepts
    # a write only if nobody else wrote since this copy was read. 0 = unsaved.
    version: int = 0

    @classmethod
    def create(cls, account_id: str, terms: OrderTerms, now: datetime, correlation_id: str | None = None) -> Order:
        client_key = terms.client_order_id
        order_id = order_id_for_client_key(account_id, client_key) if client_key else new_order_id()
        return cls(
            id=order_id,
            account_id=account_id,
            terms=terms,
            status=OrderStatus.PENDING,
            created_at=now,
            updated_at=now,
            correlation_id=correlation_id,
        )

    def has_same_terms(self, terms: OrderTerms) -> bool:
        return self.terms == terms

    @property
    def is_pending(self) -> bool:
        return self.status is OrderStatus.PENDING

    @property
    def needs_work(self) -> bool:
        """Whether our own workers still owe this order something: its placement, or a cancel request."""
        return self.status in (OrderStatus.PENDING, OrderStatus.PENDING_CANCEL)

    @property
    def known_to_exchange(self) -> bool:
        # Only the exchange hands out its order ids (in the placement answer or in a report).
        return self.exchange_order_id is not None

    def placement_stage(self, now: datetime) -> PlacementStage:
        """Where this order's placement stands at `now`, as far as anything we sent goes."""
        # The lease first: orders claimed before placement_quiet_at existed
        # carry only a lease, and while it runs the attempt is at the exchange.
        if self.placing_until is not None and now < self.placing_until:
            return PlacementStage.AT_THE_EXCHANGE
        if self.placement_quiet_at is None:
            return PlacementStage.NEVER_SENT
        if now < self.placement_quiet_at:
            return PlacementStage.MAY_STILL_LAND
        return PlacementStage.QUIET

    def placement_may_still_land(self, now: datetime) -> bool:
        """Whether a placement we sent may still reach the exchange (an attempt in flight or just timed out)."""
        return self.placement_stage(now) in _SENT_AND_MAY_STILL_LAND

    def _moved_to(self, target: OrderStatus, now: datetime, **changes: object) -> Order:
        if not can_transition(self.status, target):
            raise InvalidTransition(self.status, target)
        return dataclasses.replace(self, status=target, updated_at=now, **changes)  # type: ignore[arg-type]

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def remaining_quantity(self) -> int:
        # A done order has nothing left open, whether or not it was fully filled.
        return 0 if self.is_terminal else self.terms.quantity - self.filled_quantity

    def claimed_for_placement(self, now: datetime, until: datetime) -> Order:
        """A placement attempt is about to call the exchange; until then a cancel must ask the exchange too."""
        if not self.is_pending or self.placement_stage(now) is PlacementStage.AT_THE_EXCHANGE:
            raise InvalidTransition(self.status, self.status)
        quiet_at = until if self.placement_quiet_at is None else max(self.placement_quiet_at, until)
        return dataclasses.replace(self, placing_until=until, placement_quiet_at=quiet_at, updated_at=now)

    def placed(self, exchange_order_id: str | None, now: datetime) -> Order:
        """The exchange accepted the order."""
        if self.is_pending:
            return self._moved_to(
                OrderStatus.PLACED,
                now,
                placed_at=now,
                exchange_order_id=exchange_order_id,
                attempts=self.attempts + 1,
                placing_until=None,
            )
        if self.placed_at is None and self.status in TRANSITIONS[OrderStatus.PENDING] - {OrderStatus.FAILED}:
            # Execution reports overtook the placement handler, or the client
            # asked to cancel while this attempt was in flight: keep the
            # (later) status, only record that and when placement finished.
            return dataclasses.replace(
                self,
                placed_at=now,
                exchange_order_id=self.exchange_order_id or exchange_order_id,
                attempts=self.attempts + 1,
                placing_until=None,
                updated_at=now,
            )
        raise InvalidTransition(self.status, OrderStatus.PLACED)

    def cancel_requested(self, now: datetime) -> Order:
        """The client's cancel: canceled at once if the exchange cannot have it, else pending_cancel.

        Raises OrderNotCancelable for a done order. Asking again changes nothing.
        """
        if self.status is OrderStatus.PENDING_CANCEL:
            return self
        if self.is_terminal:
            raise OrderNotCancelable(self.id, self.status)
        if self.is_pending and self.placement_stage(now) is PlacementStage.NEVER_SENT:
            # Never sent: the placement worker claims the order (a versioned
            # write) before it calls the exchange, so it will find the order
            # canceled and never send it.
            return self._moved_to(OrderStatus.CANCELED, now)
        # Sent at least once (in flight, timed out, its answer or our write
        # of it lost, or placed): only the exchange knows. The caller queues
        # the first cancel request with this write.
        return self._moved_to(OrderStatus.PENDING_CANCEL, now, cancel_queued_at=now)

    def replace_requested(self, replacement_id: str, now: datetime) -> Order:
        """The client's replace (domain/replace.py): pending_replace, naming the replacement.

        OrderNotReplaceable unless the exchange holds the order and no cancel or replace is pending.
        """
        if OrderStatus.PENDING_REPLACE not in TRANSITIONS[self.status]:
            raise OrderNotReplaceable(self.id, self.status)
        return self._moved_to(OrderStatus.PENDING_REPLACE, now, replaced_by=replacement_id)

    def replace_refused(self, replacement_id: str, now: datetime) -> Order:
        """Its replacement ended without the exchange taking it: the order works on as its reports say.

        Only that replacement's end counts (a later replace has its own). A
        pending_replace order goes back down (REPLACE_REFUSAL_TRANSITIONS); one
        the exchange ended or a cancel overtook keeps its status, and no order
        names a replacement that never replaced it. A replaced order is left
        alone: the exchange confirmed it, so this cannot be its replacement's end.
        """
        if self.replaced_by != replacement_id or self.status is OrderStatus.REPLACED:
            return self
        status = self.status
        if status is OrderStatus.PENDING_REPLACE:
            status = OrderStatus.PARTIALLY_FILLED if self.filled_quantity else OrderStatus.PLACED
            assert status in REPLACE_REFUSAL_TRANSITIONS[self.status]
        return dataclasses.replace(self, status=status, replaced_by=None, updated_at=now)

    def _cancel_active_since(self, now: datetime, interval: timedelta) -> datetime | None:
        """The latest cancel request queued or sent within `interval` before `now`, if any."""
        recent = [t for t in (self.cancel_queued_at, self.cancel_sent_at) if t is not None and now - t < interval]
        return max(recent) if recent else None

    def cancel_queue_due(self, now: datetime, interval: timedelta) -> bool:
        """Whether a repeated client cancel should queue a cancel request (none queued or sent within interval)."""
        return self.status is OrderStatus.PENDING_CANCEL and self._cancel_active_since(now, interval) is None

    def cancel_queued(self, now: datetime, interval: timedelta) -> Order:
        """A repeated client cancel queues a request: at most one per interval (InvalidTransition if not due)."""
        if not self.cancel_queue_due(now, interval):
            raise InvalidTransition(self.status, self.status)
        return dataclasses.replace(self, cancel_queued_at=now)

    def cancel_sent(self, now: datetime, interval: timedelta) -> Order:
        """The cancel worker is about to ask the exchange; InvalidTransition if another worker did within interval.

        Written (versioned) before the call, so of two deliveries at once only
        one calls the exchange. The queue time does not count here: the
        message being handled is the one queued then.
        """
        recently_sent = self.cancel_sent_at is not None and now - self.cancel_sent_at < interval
        if self.status is not OrderStatus.PENDING_CANCEL or recently_sent:
            raise InvalidTransition(self.status, self.status)
        return dataclasses.replace(self, cancel_sent_at=now)

    def canceled_unplaced(self, now: datetime) -> Order:
        """The exchange does not know this order and nothing we sent can still reach it: canceled on our side."""
        if (
            self.status is not OrderStatus.PENDING_CANCEL
            or self.placement_may_still_land(now)
            or self.known_to_exchange
            or self.placed_at is not None
        ):
            raise InvalidTransition(self.status, OrderStatus.CANCELED)
        return self._moved_to(OrderStatus.CANCELED, now, placing_until=None)

    def apply_executions(self, reports: list[ExecutionReport], now: datetime) -> Order:
        """This order after the reports; the result is the same for any order and repetition of them."""
        for report in reports:
            if report.order_id != self.id:
                raise ValueError(f"report {report.exec_id} is for order {report.order_id}, not {self.id}")
        return self._merged([(STATUS_AFTER[r.exec_type], r.fill_progress, r.exchange_order_id) for r in reports], now)

    def reconciled_with(self, venue: VenueOrderState, now: datetime) -> Order:
        """This order after the exchange's status answer: the same merge as reports, so never a step back."""
        return self._merged([(venue.status, venue.fill_progress, venue.exchange_order_id)], now)

    def placement_confirmed(self, venue: VenueOrderState, now: datetime) -> Order:
        """The exchange's status answer shows it holds this order: our placement is done, then its state merged.

        What the placement handler records on an accepted answer (placed_at,
        the attempt), for an order whose answers were lost; a failed order is
        corrected instead (see CORRECTION_TRANSITIONS).
        """
        recorded = self
        if self.placed_at is None and self.status is not OrderStatus.FAILED:
            recorded = self.placed(venue.exchange_order_id, now)
        return recorded.reconciled_with(venue, now)

    def is_corrected_from(self, before: Order) -> bool:
        """Whether this order is `before` corrected: failed there, the exchange's state here."""
        return before.status is OrderStatus.FAILED and self.status in CORRECTION_TRANSITIONS[OrderStatus.FAILED]

    @property
    def is_corrected_by(self) -> frozenset[OrderStatus]:
        """The statuses the exchange's word may correct this order to (empty unless it is failed)."""
        return CORRECTION_TRANSITIONS.get(self.status, frozenset())

    def _merged(self, observations: list[_Observation], now: datetime) -> Order:
        """Order-independent and idempotent: statuses only go up the table, fills only up by fill_progress.

        A failed order that the exchange shows it holds is corrected: merged
        from pending, as if its placement had never been given up on.
        """
        status = self.status
        corrections = self.is_corrected_by
        # A rejection re-merges a failed order too (to rejected, the exchange's
        # own word for "not executed", not counted as a correction): otherwise
        # a rejection and a later `new` would end elsewhere than `new` first.
        reopening = corrections | {OrderStatus.REJECTED} if corrections else frozenset()
        if any(target in reopening for target, _, _ in observations):
            status = OrderStatus.PENDING
        best: tuple[int, Decimal] = (self.filled_quantity, self.average_fill_price or Decimal(-1))
        exchange_order_id = self.exchange_order_id
        for target, progress, venue_order_id in observations:
            if can_transition(status, target):
                status = target
            best = max(best, progress)
            exchange_order_id = exchange_order_id or venue_order_id
        filled, average = best
        changed = dataclasses.replace(
            self,
            status=status,
            filled_quantity=filled,
            average_fill_price=None if average < 0 else average,
            exchange_order_id=exchange_order_id,
        )
        if self.status is OrderStatus.FAILED and changed.status is not OrderStatus.FAILED:
            # The exchange has it after all: it was placed, and nothing failed.
            changed = dataclasses.replace(changed, failure_reason=None, placed_at=self.placed_at or now)
        return self if changed == self else dataclasses.replace(changed, updated_at=now)

    def failed(self, reason: str, now: datetime, after_attempt: bool = True) -> Order:
        """Failed for good; after_attempt=False when no attempt ended here (the exchange's verdict came later)."""
        return self._moved_to(
            OrderStatus.FAILED,
            now,
            failure_reason=reason,
            last_error=reason,
            attempts=self.attempts + after_attempt,
            placing_until=None,
        )

    def reopened(self, now: datetime, by: str) -> Order:
        """A failed order made pending again by an operator (by: who), with a fresh set of attempts.

        The reopening is recorded (when, by whom, the failure it undid), one
        entry per redrive, so the order's history shows every one of them.
        """
        # Nor a failed replacement: its original was handed back and may have another replace
        # under way; sent now, the two would race at the exchange (ops redrive says so).
        if OrderStatus.PENDING not in OPERATOR_TRANSITIONS.get(self.status, frozenset()) or self.replaces:
            raise InvalidTransition(self.status, OrderStatus.PENDING)
        reopening = Reopening(at=now, by=by, earlier_failure=self.failure_reason)
        return dataclasses.replace(
            self,
            status=OrderStatus.PENDING,
            updated_at=now,
            attempts=0,
            failure_reason=None,
            placing_until=None,
            reopenings=(*self.reopenings, reopening),
        )

    @property
    def reopened_at(self) -> datetime | None:
        """When an operator last reopened this order, if ever."""
        return self.reopenings[-1].at if self.reopenings else None

    def attempt_failed(self, error: str, now: datetime, attempt: int | None = None) -> Order:
        """A placement attempt ended without the exchange accepting: one attempt more, the lease released.

        Still pending (it will be retried), or still pending_cancel: the client
        canceled meanwhile, and the cancel request settles it with the exchange.
        attempt: the attempt's own number, when it counts more than the ones
        recorded (receives that died before recording theirs).
        """
        if self.status not in (OrderStatus.PENDING, OrderStatus.PENDING_CANCEL):
            raise InvalidTransition(self.status, self.status)
        attempts = max(attempt or 0, self.attempts + 1)
        return dataclasses.replace(self, updated_at=now, last_error=error, attempts=attempts, placing_until=None)
