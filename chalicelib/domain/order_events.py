"""Order events: each change of an order as its client sees it, derived from the order before and after; pure.

A stream of the orders table gives every stored change (before, after). One
change may hold several client-visible steps: a batch of execution reports
can fill an order in three reports and then cancel the rest. Each fill is an
event of its own carrying its execution report, so a client sees every
execution; the status change the fills end in follows them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from chalicelib.domain.model import (
    CORRECTION_TRANSITIONS,
    OPERATOR_TRANSITIONS,
    REPLACE_REFUSAL_TRANSITIONS,
    TRANSITIONS,
    ExecType,
    ExecutionReport,
    Order,
    OrderStatus,
)


class OrderEventType(StrEnum):
    CREATED = "created"
    PLACED = "placed"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"
    PENDING_REPLACE = "pending_replace"
    REPLACED = "replaced"
    # The exchange refused a replace (or never got it): the order works on as before.
    REPLACE_REFUSED = "replace_refused"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"
    # An operator's redrive made a failed order pending again (ops redrive): not in the list, since
    # no client action or exchange report causes it, but a client following the order must see it come back.
    REOPENED = "reopened"


# The event a change to each status is. PENDING is only ever reached again by a reopening
# (a new order's first status is its `created` event).
EVENT_OF_STATUS: dict[OrderStatus, OrderEventType] = {
    OrderStatus.PENDING: OrderEventType.REOPENED,
    OrderStatus.PLACED: OrderEventType.PLACED,
    OrderStatus.PARTIALLY_FILLED: OrderEventType.PARTIAL_FILL,
    OrderStatus.PENDING_REPLACE: OrderEventType.PENDING_REPLACE,
    OrderStatus.REPLACED: OrderEventType.REPLACED,
    OrderStatus.PENDING_CANCEL: OrderEventType.PENDING_CANCEL,
    OrderStatus.FILLED: OrderEventType.FILL,
    OrderStatus.CANCELED: OrderEventType.CANCELED,
    OrderStatus.REJECTED: OrderEventType.REJECTED,
    OrderStatus.EXPIRED: OrderEventType.EXPIRED,
    OrderStatus.FAILED: OrderEventType.FAILED,
}

_FILL_STATUSES = frozenset({OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED})
_FILL_EXEC_TYPES = frozenset({ExecType.PARTIAL_FILL, ExecType.FILL})


def may_move(source: OrderStatus, target: OrderStatus) -> bool:
    """Whether any of the domain's tables lets an order go from source to target (or it stays)."""
    if source is target:
        return True
    return any(target in table.get(source, frozenset()) for table in _ALL_TRANSITIONS)


_ALL_TRANSITIONS = (TRANSITIONS, OPERATOR_TRANSITIONS, CORRECTION_TRANSITIONS, REPLACE_REFUSAL_TRANSITIONS)


@dataclass(frozen=True)
class OrderChange:
    """One stored change of an order: before is None for a new order."""

    before: Order | None
    after: Order


@dataclass(frozen=True)
class OrderEvent:
    """One client-visible step of an order: `order` is the order as it stood right after it."""

    type: OrderEventType
    time: datetime
    order: Order
    execution: ExecutionReport | None
    # Names this event of this change for good (order id, version, place in the change): the log keeps each once.
    change_key: str


def derive_events(change: OrderChange, executions: Sequence[ExecutionReport]) -> list[OrderEvent]:
    """The events of one change, oldest first; executions: the order's stored reports (only fills are looked at)."""
    before, after = change.before, change.after
    if before is None:
        steps: list[tuple[OrderEventType, Order, ExecutionReport | None]] = [(OrderEventType.CREATED, after, None)]
    else:
        steps = _fill_steps(before, after, executions)
        status_shown = steps[-1][1].status if steps else before.status
        if after.status is not status_shown:
            steps.append((_status_event(status_shown, after.status), after, None))
    return [
        OrderEvent(
            type=kind,
            time=after.updated_at,
            order=order,
            execution=report,
            change_key=f"{after.id}#{after.version}#{n}",
        )
        for n, (kind, order, report) in enumerate(steps)
    ]


def _status_event(shown: OrderStatus, status: OrderStatus) -> OrderEventType:
    # Back down from pending_replace: the replace's end, not the order's placement again.
    if status in REPLACE_REFUSAL_TRANSITIONS.get(shown, frozenset()):
        return OrderEventType.REPLACE_REFUSED
    return EVENT_OF_STATUS[status]


def _new_fills(before: Order, after: Order, executions: Sequence[ExecutionReport]) -> list[ExecutionReport]:
    """The fill reports this change applied, one per cumulative quantity, ascending."""
    by_quantity: dict[int, ExecutionReport] = {}
    for report in sorted(executions, key=lambda r: (r.transact_time, r.seq, r.exec_id)):
        if report.exec_type in _FILL_EXEC_TYPES and before.filled_quantity < report.cum_qty <= after.filled_quantity:
            # A repeated report (another exec id, the same fill) is one fill: keep the first.
            by_quantity.setdefault(report.cum_qty, report)
    return [by_quantity[quantity] for quantity in sorted(by_quantity)]


def _fill_steps(
    before: Order, after: Order, executions: Sequence[ExecutionReport]
) -> list[tuple[OrderEventType, Order, ExecutionReport | None]]:
    """One partial_fill or fill per new fill report; one with no report for fills none is stored for
    (the reconciler's correction from the exchange's status answer)."""
    if after.filled_quantity <= before.filled_quantity:
        return []
    reports = _new_fills(before, after, executions)
    fills: list[ExecutionReport | None] = list(reports)
    # A replacement's first report (`new`) carries its original's fills, already that order's events:
    # only what it filled beyond them is its own.
    carried = _carried_fills(after, executions)
    beyond_reports = reports[-1].cum_qty if reports else max(before.filled_quantity, carried)
    if beyond_reports < after.filled_quantity:
        fills.append(None)  # filled further than any stored report says
    if not fills:
        return []
    # The status shown by the fills before the last: partially filled where the order may have passed
    # through that status on its way from before to after, else the status it had (e.g. pending_cancel).
    passing = OrderStatus.PARTIALLY_FILLED
    if not (may_move(before.status, passing) and may_move(passing, after.status)):
        passing = before.status
    steps: list[tuple[OrderEventType, Order, ExecutionReport | None]] = []
    for report in fills[:-1]:
        assert report is not None  # only the last may lack a report
        steps.append((OrderEventType.PARTIAL_FILL, _projected(after, passing, report), report))
    last = fills[-1]
    if after.status in _FILL_STATUSES or after.status is before.status:
        kind = OrderEventType.FILL if after.status is OrderStatus.FILLED else OrderEventType.PARTIAL_FILL
        steps.append((kind, after, last))
    elif last is None:
        steps.append((OrderEventType.PARTIAL_FILL, _projected_total(after, passing), None))
    else:
        steps.append((OrderEventType.PARTIAL_FILL, _projected(after, passing, last), last))
    return steps


def _carried_fills(order: Order, executions: Sequence[ExecutionReport]) -> int:
    """What a replacement's `new` report says it carried over from its original (0 for any other order)."""
    if order.replaces is None:
        return 0
    return max((r.cum_qty for r in executions if r.exec_type is ExecType.NEW), default=0)


def _projected(after: Order, status: OrderStatus, report: ExecutionReport) -> Order:
    """The order as it stood right after this fill report: the later state with the report's quantities."""
    return dataclasses.replace(
        after, status=status, filled_quantity=report.cum_qty, average_fill_price=report.avg_price
    )


def _projected_total(after: Order, status: OrderStatus) -> Order:
    return dataclasses.replace(after, status=status)
