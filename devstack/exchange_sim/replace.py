"""Cancel/replace (FIX OrderCancelReplaceRequest, 35=G): the checks, the answers, and the replace itself.

`Replacing` is a part of the exchange state (state.py's ExchangeState), kept here so that
state.py stays one room: it decides under the state's lock, with the state's records,
reports and scheduler. The checks (`refusal`) only read the two records involved, so the
order they are made in is written down in one place.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devstack.exchange_sim.fill_plans import Execution, Step, plan_replacement
from devstack.exchange_sim.orders import InvalidOrder, OrderRequest

if TYPE_CHECKING:
    # Only for annotations: state.py imports this module, so a run-time import would be a cycle.
    import random
    import threading

    from devstack.exchange_sim.config import SimConfig
    from devstack.exchange_sim.state import OrderRecord
    from devstack.exchange_sim.time_in_force import Lifetime

# /stats totals over POST /orders/{id}/replace, and the same per order record (the original's,
# the order the request names, as cancels count on the order they cancel).
REPLACE_COUNTERS = ("replace_requests", "replaced", "replaces_too_late", "replaces_unknown", "replace_failures")
CHANGED_TERMS = "a replace cannot change the instrument, side or type"
# The terms a replace must keep: FIX lets a replace change quantity, prices and time in force only.
KEPT_TERMS = ("instrument", "side", "type")


class ReplaceOutcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    UNKNOWN = "unknown"
    TOO_LATE = "too_late"
    FAILED = "failed"


# The outcomes that count in a counter of their own besides replace_requests.
COUNTER_OF_OUTCOME = {
    ReplaceOutcome.ACCEPTED: "replaced",
    ReplaceOutcome.TOO_LATE: "replaces_too_late",
    ReplaceOutcome.UNKNOWN: "replaces_unknown",
    ReplaceOutcome.FAILED: "replace_failures",
}
# The answers the lost-answer knobs drop, as for order entry: a replace is an order entry for
# the replacement's id. A refusal (400, 404, 409 too late) is about the request, and answers.
ANSWERS_THAT_CAN_BE_LOST = frozenset({ReplaceOutcome.ACCEPTED, ReplaceOutcome.DUPLICATE, ReplaceOutcome.FAILED})


@dataclass(frozen=True)
class ReplaceDecision:
    outcome: ReplaceOutcome
    # The replacement's client order id (when the body had a readable one), and, accepted or
    # duplicate, its exchange order id.
    client_order_id: str | None = None
    exchange_order_id: str | None = None
    problem: str | None = None
    # The original's status when the replace came too late.
    status: str | None = None
    answer_lost: bool = False


def refusal(
    request: OrderRequest | InvalidOrder, original: OrderRecord | None, replacement: OrderRecord | None
) -> ReplaceDecision | None:
    """Why the exchange refuses this replace, or None if it accepts it; `replacement` is the record of the request's id.

    The duplicate check comes first: a retried replace whose first attempt was accepted
    (its answer lost) must hear "already accepted", not that its original is replaced.
    """
    new_id = request.client_order_id
    if replacement is not None and replacement.exchange_order_id is not None:
        return ReplaceDecision(ReplaceOutcome.DUPLICATE, new_id, replacement.exchange_order_id)
    if isinstance(request, InvalidOrder):
        return ReplaceDecision(ReplaceOutcome.INVALID, new_id, problem=request.problem)
    # A record without an order is one whose every entry attempt failed: never accepted.
    if original is None or original.exchange_order_id is None or original.order is None:
        return ReplaceDecision(ReplaceOutcome.UNKNOWN, new_id)
    if any(getattr(request, name) != getattr(original.order, name) for name in KEPT_TERMS):
        return ReplaceDecision(ReplaceOutcome.INVALID, new_id, problem=CHANGED_TERMS)
    execution = original.execution
    if execution is not None and execution.done:
        return ReplaceDecision(ReplaceOutcome.TOO_LATE, new_id, status=execution.status)
    filled = 0 if execution is None else execution.cum_qty
    if request.quantity <= filled:
        # Too late too: the original filled (in the meantime, as far as the client knew) what the new
        # total would have left open, as a venue's cancel/replace reject says (FIX CxlRejReason 0).
        problem = f"too late to replace: order has filled {filled}, not less than the new quantity {request.quantity}"
        status = "new" if execution is None else execution.status
        return ReplaceDecision(ReplaceOutcome.TOO_LATE, new_id, problem=problem, status=status)
    return None


def carried_execution(original: Execution | None, quantity: int) -> Execution:
    """The replacement's execution before its own first report: the original's fills carried over.

    FIX carries CumQty over to the replacement, and so its average price: the notional
    comes along too. `quantity` is the replacement's total, the carried fills included.
    """
    if original is None:
        return Execution(quantity)
    return Execution(quantity, cum_qty=original.cum_qty, notional=original.notional)


class Replacing:
    """ExchangeState's cancel/replace: `replace`, on the state's lock, records, reports and engine."""

    if TYPE_CHECKING:
        # What this uses of ExchangeState, declared for the type checker alone: ExchangeState has them.
        _lock: threading.Lock
        _config: SimConfig
        _orders: dict[str, OrderRecord]
        _counts: dict[str, int]
        _replace_rng: random.Random
        _engine_rng: random.Random

        def _record(self, client_order_id: str) -> OrderRecord: ...
        def _accept(self, record: OrderRecord, request: OrderRequest) -> Lifetime: ...
        def _report(self, client_order_id: str, record: OrderRecord, step: Step) -> None: ...
        def _schedule(self, order: OrderRequest, steps: Sequence[Step]) -> None: ...
        def _watch_if_stop(self, client_order_id: str, order: OrderRequest) -> None: ...
        def _answer_lost(self, client_order_id: str, drawn: bool) -> bool: ...

    def replace(self, orig_client_order_id: str, request: OrderRequest | InvalidOrder) -> ReplaceDecision:
        """Decide one cancel/replace attempt: the checks, the original's end and the replacement's start, one step."""
        with self._lock:
            # Two draws per attempt whatever the rates, from a stream of its own: replaces must
            # not shift the seeded patterns of order entry or cancels, nor the engine's plans.
            failed = self._replace_rng.random() < self._config.failure_rate
            answer_lost = self._replace_rng.random() < self._config.lost_answer_rate
            original = self._orders.get(orig_client_order_id)
            new_id = request.client_order_id
            if failed:
                # As for order entry: the request never reached the matching engine.
                decision = ReplaceDecision(ReplaceOutcome.FAILED, new_id)
            else:
                replacement = None if new_id is None else self._orders.get(new_id)
                decision = refusal(request, original, replacement) or self._replace(orig_client_order_id, request)
            for counter in ("replace_requests", COUNTER_OF_OUTCOME.get(decision.outcome)):
                if counter is not None:
                    self._counts[counter] += 1
                    if original is not None:
                        original.replace_counts[counter] += 1
            if new_id is None or decision.outcome not in ANSWERS_THAT_CAN_BE_LOST:
                return decision
            if not self._answer_lost(new_id, answer_lost and decision.outcome is ReplaceOutcome.ACCEPTED):
                return decision
            return dataclasses.replace(decision, answer_lost=True)

    def _replace(self, orig_client_order_id: str, request: OrderRequest | InvalidOrder) -> ReplaceDecision:
        """End the original with `replaced` and start its replacement (refusal found none); caller holds the lock."""
        original = self._orders[orig_client_order_id]
        assert isinstance(request, OrderRequest)
        if original.execution is None:
            # As for a cancel: the venue acknowledges the original before it ends it, so a
            # consumer still sees `new` first.
            self._report(orig_client_order_id, original, Step(0.0, "new"))
        # Terminal: _emit drops what is still queued for the original, _report forgets its stop.
        self._report(orig_client_order_id, original, Step(0.0, "replaced"))
        original.replaced_by = request.client_order_id
        record = self._record(request.client_order_id)
        lifetime = self._accept(record, request)
        record.orig_client_order_id = orig_client_order_id
        record.execution = carried_execution(original.execution, request.quantity)
        # Acknowledged at once, in the same step as the original's end; its plan starts from here
        # and works what is left after the carried fills.
        self._report(request.client_order_id, record, Step(0.0, "new"))
        left = dataclasses.replace(request, quantity=request.quantity - record.execution.cum_qty)
        self._schedule(request, plan_replacement(left, self._config, self._engine_rng, lifetime))
        self._watch_if_stop(request.client_order_id, request)
        return ReplaceDecision(ReplaceOutcome.ACCEPTED, request.client_order_id, record.exchange_order_id)
