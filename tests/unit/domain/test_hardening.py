"""Issue 15 in the domain: the cancel resend interval, recorded reopenings, client-facing failure reasons."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.domain.failure_reasons import CLIENT_FAILURE_REASONS, client_failure_reason
from chalicelib.domain.model import (
    InvalidTransition,
    Order,
    OrderStatus,
    OrderTerms,
    OrderType,
    Reopening,
    Side,
)
from chalicelib.entrypoints.response_models import order_to_json

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
INTERVAL = timedelta(seconds=5)
OPERATOR = "arn:aws:sts::123456789012:assumed-role/ops/alice"


def an_order(status: OrderStatus = OrderStatus.PLACED, **changes: object) -> Order:
    terms = OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", 10, Decimal("99.5"))
    fields: dict[str, object] = {"status": status, "exchange_order_id": "X1", **changes}
    return replace(Order.create("alice", terms, T0), **fields)  # type: ignore[arg-type]


def test_the_cancel_request_that_makes_an_order_pending_cancel_counts_as_queued() -> None:
    canceling = an_order().cancel_requested(T0)
    assert (canceling.status, canceling.cancel_queued_at, canceling.cancel_sent_at) == (
        OrderStatus.PENDING_CANCEL,
        T0,
        None,
    )
    assert canceling.cancel_requested(T0 + timedelta(hours=1)) == canceling  # asking again changes nothing


def test_a_repeated_cancel_queues_only_after_the_interval() -> None:
    canceling = an_order().cancel_requested(T0)
    assert not canceling.cancel_queue_due(T0 + INTERVAL - timedelta(microseconds=1), INTERVAL)
    with pytest.raises(InvalidTransition):
        canceling.cancel_queued(T0 + timedelta(seconds=1), INTERVAL)
    assert canceling.cancel_queue_due(T0 + INTERVAL, INTERVAL)
    assert canceling.cancel_queued(T0 + INTERVAL, INTERVAL).cancel_queued_at == T0 + INTERVAL
    # A send by the worker is as recent a request as a queued one.
    sent = canceling.cancel_sent(T0 + 2 * INTERVAL, INTERVAL)
    assert not sent.cancel_queue_due(T0 + 2 * INTERVAL + timedelta(seconds=1), INTERVAL)


def test_the_worker_sends_at_most_once_per_interval_whatever_was_queued() -> None:
    canceling = an_order().cancel_requested(T0)
    sent = canceling.cancel_sent(T0, INTERVAL)  # the message queued at T0 is the one being sent
    assert sent.cancel_sent_at == T0
    with pytest.raises(InvalidTransition):
        sent.cancel_sent(T0 + INTERVAL - timedelta(microseconds=1), INTERVAL)
    assert sent.cancel_sent(T0 + INTERVAL, INTERVAL).cancel_sent_at == T0 + INTERVAL


@pytest.mark.parametrize("status", [OrderStatus.PLACED, OrderStatus.CANCELED, OrderStatus.FILLED])
def test_only_a_pending_cancel_order_has_cancel_requests_to_send(status: OrderStatus) -> None:
    order = an_order(status)
    assert not order.cancel_queue_due(T0, INTERVAL)
    with pytest.raises(InvalidTransition):
        order.cancel_sent(T0, INTERVAL)


def test_every_reopening_is_recorded_with_who_and_when() -> None:
    failed = an_order(OrderStatus.PENDING, exchange_order_id=None).failed("exchange unavailable after 3 attempts", T0)
    first = failed.reopened(T0 + timedelta(minutes=1), by=OPERATOR)
    assert first.status is OrderStatus.PENDING
    assert first.reopenings == (
        Reopening(T0 + timedelta(minutes=1), OPERATOR, "exchange unavailable after 3 attempts"),
    )
    again = first.failed("rejected by the exchange: unknown instrument", T0 + timedelta(minutes=2))
    second = again.reopened(T0 + timedelta(minutes=3), by="bob")
    assert [r.by for r in second.reopenings] == [OPERATOR, "bob"]
    assert second.reopened_at == T0 + timedelta(minutes=3)
    assert an_order().reopened_at is None


def test_a_reopening_needs_a_failed_order() -> None:
    with pytest.raises(InvalidTransition):
        an_order(OrderStatus.PLACED).reopened(T0, by=OPERATOR)


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        (None, None),
        ("rejected by the exchange: HTTP 400 <html>\x1b[31m</html>", "rejected by the exchange"),
        ("exchange unavailable after 3 attempts, and it does not know the order", "exchange unreachable"),
        ("rejected (x); order status query: connect to 10.0.0.7:443 timed out", "placement failed"),
    ],
)
def test_clients_see_a_fixed_failure_reason_never_the_detail(stored: str | None, shown: str | None) -> None:
    assert client_failure_reason(stored) == shown
    assert shown is None or shown in CLIENT_FAILURE_REASONS


def test_the_api_shows_when_an_order_was_reopened_but_not_by_whom_nor_the_raw_error() -> None:
    failed = an_order(OrderStatus.PENDING, exchange_order_id=None).failed("rejected by the exchange: 10.0.0.7", T0)
    body = order_to_json(failed)
    assert body["failure_reason"] == "rejected by the exchange"
    assert body["reopened_at"] is None
    reopened = order_to_json(failed.reopened(T0 + timedelta(minutes=1), by=OPERATOR))
    assert reopened["reopened_at"] == "2026-11-23T12:01:00.000Z"
    assert OPERATOR not in str(reopened) and "10.0.0.7" not in str(reopened)
