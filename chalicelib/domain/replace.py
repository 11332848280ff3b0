"""A client's replace of an open order (FIX cancel/replace, 35=G): the new terms, checked, and the replacement; pure.

A replace is a new order (the replacement, pending, with `replaces` naming the
original) written in one transaction with the original's move to
pending_replace. The placement worker sends it to the exchange as a
cancel/replace of the original; the exchange's `replaced` report ends the
original, and its acceptance places the replacement. If the exchange refuses
(the original was done first) or never gets it, the replacement ends rejected
or failed and the original works on (Order.replace_refused).

Quantity is the new total, as in FIX: what the original filled counts toward
it (the exchange carries the original's fills over to the replacement), so it
must stay above the filled quantity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from chalicelib.domain.failure_reasons import TOO_LATE_TO_REPLACE
from chalicelib.domain.model import InvalidTransition, Order, OrderError, OrderStatus, can_transition
from chalicelib.domain.order_terms import (
    ExpiryRefused,
    OrderTerms,
    TermsProblem,
    TimeInForce,
    expiry_problem,
    price_problems,
    time_in_force_problems,
)


@dataclass(frozen=True)
class TermChanges:
    """What a replace asks to change; None: keep the original's (a replace cannot remove a price)."""

    quantity: int | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    expires_at: datetime | None = None
    client_order_id: str | None = None  # the replacement's own idempotency key


class ReplaceTermsRefused(OrderError):
    """The changes do not suit the original (a price its type does not take, a quantity not above what filled)."""

    def __init__(self, problems: list[TermsProblem]) -> None:
        super().__init__("; ".join(problem.message for problem in problems))
        self.problems = problems


def replacement_terms(original: Order, changes: TermChanges) -> OrderTerms:
    """The replacement's terms: the original's with the changes; ReplaceTermsRefused naming every problem.

    Changing the time in force away from gtd drops the original's expiry, which
    only a gtd order may have. Type, side and instrument never change (a
    different one is a new order, not a replace). Whether a gtd expiry is in
    the future is check_new_expiry's (it needs the clock).
    """
    terms = merged_terms(original.terms, changes)
    if terms.quantity <= original.filled_quantity:
        message = (
            f"quantity must be above the {original.filled_quantity} already filled: it is the replacement's total,"
            " fills included"
        )
        raise ReplaceTermsRefused([TermsProblem("quantity", message)])
    return terms


def merged_terms(terms: OrderTerms, changes: TermChanges) -> OrderTerms:
    """The original's terms with the changes, checked as any order's terms are (ReplaceTermsRefused).

    Only the terms: what the original has filled meanwhile is replacement_terms' to check.
    """
    time_in_force = changes.time_in_force or terms.time_in_force
    expires_at = changes.expires_at
    if expires_at is None and time_in_force is TimeInForce.GTD:
        expires_at = terms.expires_at
    limit_price = changes.limit_price if changes.limit_price is not None else terms.limit_price
    stop_price = changes.stop_price if changes.stop_price is not None else terms.stop_price
    problems = price_problems(terms.type, limit_price is not None, stop_price is not None)
    problems += time_in_force_problems(terms.type, time_in_force, expires_at is not None)
    if problems:
        raise ReplaceTermsRefused(problems)
    return dataclasses.replace(
        terms,
        quantity=changes.quantity if changes.quantity is not None else terms.quantity,
        limit_price=limit_price,
        stop_price=stop_price,
        time_in_force=time_in_force,
        expires_at=expires_at,
        client_order_id=changes.client_order_id,
    )


def check_new_expiry(changes: TermChanges, now: datetime) -> None:
    """ExpiryRefused if the replace sets an expiry that is past or too far ahead; a kept one is the original's own."""
    problem = None if changes.expires_at is None else expiry_problem(changes.expires_at, now)
    if problem:
        raise ExpiryRefused(problem)


def replacement_for(original: Order, terms: OrderTerms, now: datetime, correlation_id: str | None) -> Order:
    """The replacement order, pending, naming its original; its id from its client_order_id as any order's."""
    created = Order.create(original.account_id, terms.to_the_second(), now, correlation_id)
    return dataclasses.replace(created, replaces=original.id)


def is_same_replace(stored: Order, original: Order, terms: OrderTerms) -> bool:
    """Whether a stored order is the replacement this request asks for: a retry with the same key."""
    return stored.replaces == original.id and stored.has_same_terms(terms.to_the_second())


def replacement_rejected(replacement: Order, reason: str, now: datetime) -> Order:
    """The exchange refused the replace, its original done first: the replacement ends rejected (FIX OrdStatus 8).

    Final even for a replacement the client canceled meanwhile (pending_cancel): the exchange
    checks the replacement's id for a duplicate first, so "too late" says it never took it, and
    never will (its original stays done); nothing is left for the cancel to ask.
    reason: the exchange's words, kept for operators; clients see TOO_LATE_TO_REPLACE.
    """
    refusable = replacement.status in (OrderStatus.PENDING, OrderStatus.PENDING_CANCEL)
    if not refusable or replacement.replaces is None or not can_transition(replacement.status, OrderStatus.REJECTED):
        raise InvalidTransition(replacement.status, OrderStatus.REJECTED)
    detail = f"{TOO_LATE_TO_REPLACE}: {reason}"
    return dataclasses.replace(
        replacement,
        status=OrderStatus.REJECTED,
        updated_at=now,
        failure_reason=detail,
        last_error=detail,
        attempts=replacement.attempts + 1,
        placing_until=None,
    )


def ended_without_the_exchange(replacement: Order) -> bool:
    """Whether this replacement is done and the exchange never took it: its original works on.

    Failed (never reached it), rejected (refused), or canceled before it was
    ever sent. A replacement the exchange accepted ends some other way (filled,
    canceled at the exchange...) with placed_at set, and its original is replaced.
    """
    never_placed = replacement.placed_at is None and not replacement.known_to_exchange
    ended = replacement.status in (OrderStatus.FAILED, OrderStatus.REJECTED, OrderStatus.CANCELED)
    return replacement.replaces is not None and ended and never_placed
