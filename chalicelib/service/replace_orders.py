"""The client's replace of an open order (PATCH /orders/{id}), and handing the original back when a replace fails.

A replace has a create's guarantees: one transaction stores the replacement
(pending, in the sweep's index) with its original's move to pending_replace;
the placement worker sends it to the exchange as a cancel/replace, safe to
repeat (the exchange takes the replacement's id once); a lost queue message is
the sweep's to send. See domain/replace.py for the terms and docs/architecture.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chalicelib.adapters.queue import QueueUnavailable
from chalicelib.adapters.repository import ConcurrentModification, OrderAlreadyExists, StorageUnavailable
from chalicelib.domain.model import IdempotencyConflict, Order, OrderNotFound, order_id_for_client_key
from chalicelib.domain.replace import (
    ReplaceTermsRefused,
    TermChanges,
    check_new_expiry,
    is_same_replace,
    merged_terms,
    replacement_for,
    replacement_terms,
)
from chalicelib.service.client_orders import get_order
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.pre_trade_risk import check_order_size

logger = logging.getLogger(__name__)

# Fills of the original may land between our read and our write (each bumps
# its version): re-read and decide again, a few times.
_WRITE_RACES = 5


@dataclass(frozen=True)
class ReplacedOrder:
    replacement: Order
    created: bool  # False: an earlier request with the same client_order_id made it


def replace_order(
    order_id: str,
    account_id: str,
    changes: TermChanges,
    dependencies: Dependencies,
    correlation_id: str | None = None,
) -> ReplacedOrder:
    """Store the replacement and the original's pending_replace together, then ask for the replacement's placement.

    Raises OrderNotFound (not the account's), OrderNotReplaceable (409: done,
    not yet at the exchange, a cancel or replace pending), ReplaceTermsRefused
    and ExpiryRefused (422), RiskLimitExceeded and ReferencePriceUnavailable
    (as a create), IdempotencyConflict (409: the client_order_id names another
    order), StorageUnavailable.
    """
    original = get_order(order_id, account_id, dependencies)
    if changes.client_order_id is not None:
        replayed = _replayed(original, changes, dependencies)
        if replayed is not None:
            return ReplacedOrder(replayed, created=False)
    now = dependencies.clock()
    check_new_expiry(changes, now)
    terms = replacement_terms(original, changes)
    replacement = replacement_for(original, terms, now, correlation_id)
    original.replace_requested(replacement.id, now)  # OrderNotReplaceable before any I/O
    check_order_size(account_id, terms, dependencies)
    result = _store(replacement, original, changes, dependencies)
    if not result.created:
        return result  # another request with this key stored it, and asked for its placement
    stored = result.replacement
    try:
        dependencies.orders_queue.request_placement(stored.id, stored.correlation_id)
    except QueueUnavailable:
        logger.warning("replace message not sent; the pending sweep will send it", extra={"order_id": stored.id})
    return result


def _store(replacement: Order, original: Order, changes: TermChanges, dependencies: Dependencies) -> ReplacedOrder:
    """The one transaction, again on a fresh read of the original if something else wrote it meanwhile."""
    sweep_after = replacement.created_at + dependencies.timings.pending_sweep_after
    current = original
    for _ in range(_WRITE_RACES):
        try:
            stored, _ = dependencies.orders.add_replacement(
                replacement, current.replace_requested(replacement.id, replacement.created_at), sweep_after
            )
            return ReplacedOrder(stored, created=True)
        except OrderAlreadyExists:
            return _ours_or_replay(replacement, original, changes, dependencies)
        except ConcurrentModification:
            reread = dependencies.orders.get(original.id)
            if reread is None:
                raise OrderNotFound(original.id) from None
            if reread.replaced_by == replacement.id:
                # What conflicted was the same replace (this key's request at the same moment, or
                # our own commit whose answer was lost): a replay, not a 409.
                return _ours_or_replay(replacement, original, changes, dependencies)
            current = reread
            # A fill may have passed the new quantity, or ended the order.
            replacement_terms(current, changes)
        except StorageUnavailable:
            # The transaction may have committed before the error: one look tells.
            found = dependencies.orders.get(replacement.id)
            if found is None or found.created_at != replacement.created_at:
                raise
            return ReplacedOrder(found, created=True)
    raise ConcurrentModification(original.id)


def _ours_or_replay(
    replacement: Order, original: Order, changes: TermChanges, dependencies: Dependencies
) -> ReplacedOrder:
    """The replacement's id is taken: our own commit whose answer was lost, or a concurrent request with the key."""
    existing = dependencies.orders.get(replacement.id)
    if existing is None:
        raise StorageUnavailable(f"replacement {replacement.id} not readable")
    if existing.created_at == replacement.created_at and existing.correlation_id == replacement.correlation_id:
        # Ours: created_at is this request's clock reading, to the microsecond.
        return ReplacedOrder(existing, created=True)
    replayed = _replayed(original, changes, dependencies)
    if replayed is None:
        raise IdempotencyConflict(f"client_order_id {changes.client_order_id!r} is in use")
    return ReplacedOrder(replayed, created=False)


def _replayed(original: Order, changes: TermChanges, dependencies: Dependencies) -> Order | None:
    """The replacement an earlier request with this client_order_id made, if any; IdempotencyConflict for another.

    Compared on the terms alone, not on what the original filled since: a
    retry after fills must still get its replacement back.
    """
    if changes.client_order_id is None:
        return None
    existing = dependencies.orders.get(order_id_for_client_key(original.account_id, changes.client_order_id))
    if existing is None:
        return None
    try:
        same = is_same_replace(existing, original, merged_terms(original.terms, changes))
    except ReplaceTermsRefused:
        same = False
    if not same:
        raise IdempotencyConflict(
            f"client_order_id {changes.client_order_id!r} was already used for another order or other terms"
        )
    return existing
