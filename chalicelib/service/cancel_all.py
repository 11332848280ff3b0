"""DELETE /orders: cancel every open order of an account, each exactly as DELETE /orders/{id} would, within bounds.

The open orders come from the account-open-orders index (adapters/open_orders.py),
in order id order, so a request that stops at its bounds says where the next
one goes on (`resume_after`). Each order goes through the single cancel
(client_orders.cancel_read_order), with all its guarantees: canceled at once
if never sent, else pending_cancel with a cancel request queued, at most one
request per order per cancel interval however often this is repeated. One
order's failure is that order's result, never the others'.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from enum import StrEnum

from chalicelib.adapters.repository import ConcurrentModification, StorageUnavailable
from chalicelib.domain.model import Order, OrderNotCancelable, OrderNotFound, OrderStatus
from chalicelib.service.client_orders import cancel_read_order
from chalicelib.service.dependencies import Dependencies

logger = logging.getLogger(__name__)

# Orders one request handles at most: a cancel costs a few table writes and a
# queue send (tens of ms on AWS), so 100 stay well inside Timings.cancel_all_budget,
# and the answer (an order each, about 700 bytes) far below API Gateway's and
# Lambda's response limits. The default max_open_orders is 100: one request
# usually does it all.
CANCEL_ALL_MAX_ORDERS = 100


class CancelVerdict(StrEnum):
    """What DELETE /orders/{id} would have answered for the order (http: 200, 202, 409, 404, 503)."""

    CANCELED = "canceled"  # canceled at once: the exchange never had it
    PENDING_CANCEL = "pending_cancel"  # the exchange is asked; its feed settles the order
    NOT_CANCELABLE = "not_cancelable"  # done already (the index lags the table a little)
    NOT_FOUND = "not_found"  # gone from the table: orders are never deleted, so never expected
    UNAVAILABLE = "unavailable"  # storage failed for this order: nothing changed by this request, retry


@dataclass(frozen=True)
class OrderCancel:
    order: Order  # after the cancel; as last read when the cancel failed
    verdict: CancelVerdict
    done_status: OrderStatus | None = None  # NOT_CANCELABLE: the status the order is done in


@dataclass(frozen=True)
class CancelAll:
    cancels: list[OrderCancel]
    # None: every open order after `after` was handled. Else more may be
    # open: the next request goes on after this id.
    resume_after: str | None


def cancel_all_orders(
    account_id: str, dependencies: Dependencies, after: str | None = None, max_orders: int = CANCEL_ALL_MAX_ORDERS
) -> CancelAll:
    """Cancel the account's open orders with ids after `after`, up to max_orders and Timings.cancel_all_budget.

    StorageUnavailable when the open orders cannot be listed or read: then
    nothing was canceled. The index is eventually consistent: an order
    created a moment before may be missed (and one done a moment before is
    answered as done). Orders created while this runs are not canceled.
    """
    deadline = dependencies.clock() + dependencies.timings.cancel_all_budget
    # One more than are handled: whether any are left for a next request.
    ids = dependencies.orders.open_order_ids(account_id, after, max_orders + 1)
    batch = ids[:max_orders]
    orders = dependencies.orders.get_many(batch) if batch else {}
    cancels: list[OrderCancel] = []
    handled = after
    for order_id in batch:
        # At least one per request, so that repeating it always gets on.
        if cancels and dependencies.clock() >= deadline:
            logger.warning("cancel-all stopped at its time budget", extra={"account_id": account_id})
            return CancelAll(cancels, resume_after=handled)
        order = orders.get(order_id)
        if order is not None and order.account_id == account_id:
            cancels.append(_cancel_one(order, dependencies))
        handled = order_id
    return CancelAll(cancels, resume_after=handled if len(ids) > max_orders else None)


def _cancel_one(order: Order, dependencies: Dependencies) -> OrderCancel:
    try:
        canceled = cancel_read_order(order, dependencies)
    except OrderNotCancelable as refused:
        return OrderCancel(_as_done(order, refused.status, dependencies), CancelVerdict.NOT_CANCELABLE, refused.status)
    except OrderNotFound:
        logger.error("open order vanished from the table", extra={"order_id": order.id})
        return OrderCancel(order, CancelVerdict.NOT_FOUND)
    except (StorageUnavailable, ConcurrentModification):
        # As the single cancel's 503: lost the write race several times in a
        # row, or the table failed; this order is as it was, the others go on.
        logger.exception("order not canceled", extra={"order_id": order.id})
        return OrderCancel(order, CancelVerdict.UNAVAILABLE)
    if canceled.status is OrderStatus.PENDING_CANCEL:
        return OrderCancel(canceled, CancelVerdict.PENDING_CANCEL)
    return OrderCancel(canceled, CancelVerdict.CANCELED)


def _as_done(order: Order, status: OrderStatus, dependencies: Dependencies) -> Order:
    """The order as it is done: the copy read, or (if it was done after that read) the stored one, if readable."""
    if order.status is status:
        return order
    with contextlib.suppress(StorageUnavailable):
        return dependencies.orders.get(order.id) or order
    return order
