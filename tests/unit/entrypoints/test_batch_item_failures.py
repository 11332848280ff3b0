"""The SQS, Kinesis and schedule handlers in process through chalice.test with fakes: which records fail, and why."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.adapters.queue import cancel_message, placement_message
from chalicelib.domain.model import Order, OrderStatus
from tests.unit.fakes import SWEEP, FakeExchange, Fakes
from tests.unit.helpers import T0, Clock, limit_terms
from tests.unit.in_process import app_client, fill_report, kinesis_event, sqs_event

# The routes flush metrics after every request; with none recorded Powertools warns, which says nothing here.
pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:No application metrics to publish")]


def stored_order(fakes: Fakes, sweep_after: datetime = T0 + SWEEP) -> Order:
    return fakes.orders.add(Order.create("acme", limit_terms(), T0), sweep_after)


# --- The orders queue (SQS) ---


def test_only_the_records_that_must_come_back_are_batch_item_failures() -> None:
    fakes = Fakes(exchange=FakeExchange(["accept", "unavailable"]))
    placed, retrying = stored_order(fakes), stored_order(fakes)
    with app_client(fakes) as client:
        event = sqs_event(client, [placement_message(placed.id), placement_message(retrying.id), "not json"])
        response = client.lambda_.invoke("place_orders", event).payload
    # Records are placed concurrently: which one met the exchange's "unavailable" is up to the threads.
    failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    assert len(failed) == 2 and "message-2" in failed
    (retried,) = failed - {"message-2"}
    retried_id = [placed.id, retrying.id][int(retried.removeprefix("message-"))]
    assert fakes.orders.orders[retried_id].status is OrderStatus.PENDING
    # It comes back after its backoff, not after the queue's visibility timeout.
    assert 1 <= fakes.queue.visibility[retried.replace("message", "receipt")] <= 2
    assert "receipt-2" not in fakes.queue.visibility  # malformed: left to the redrive policy (the DLQ)
    assert {o.status for o in fakes.orders.orders.values()} == {OrderStatus.PLACED, OrderStatus.PENDING}


def test_a_batch_of_successes_reports_no_failures() -> None:
    fakes = Fakes()
    orders = [stored_order(fakes) for _ in range(3)]
    with app_client(fakes) as client:
        event = sqs_event(client, [placement_message(order.id) for order in orders])
        response = client.lambda_.invoke("place_orders", event).payload
    assert response == {"batchItemFailures": []}
    assert all(fakes.orders.orders[order.id].status is OrderStatus.PLACED for order in orders)


def test_the_last_attempt_fails_the_order_and_hands_the_message_to_the_dlq_at_once() -> None:
    fakes = Fakes(exchange=FakeExchange(["unavailable"]))
    order = stored_order(fakes)
    with app_client(fakes) as client:
        event = sqs_event(client, [placement_message(order.id)], receive_count=3)
        response = client.lambda_.invoke("place_orders", event).payload
    # The whole batch failing is a normal outcome: reported, not raised.
    assert response == {"batchItemFailures": [{"itemIdentifier": "message-0"}]}
    assert fakes.queue.visibility == {"receipt-0": 0}
    assert fakes.orders.orders[order.id].status is OrderStatus.FAILED


def test_a_cancel_request_the_exchange_cannot_take_now_comes_back_later() -> None:
    fakes = Fakes(exchange=FakeExchange(cancel_script=["unavailable"]))
    order = stored_order(fakes)
    fakes.orders.update(order.claimed_for_placement(T0, T0).cancel_requested(T0), sweep_after=T0 + SWEEP)
    with app_client(fakes) as client:
        response = client.lambda_.invoke("place_orders", sqs_event(client, [cancel_message(order.id)])).payload
    assert response == {"batchItemFailures": [{"itemIdentifier": "message-0"}]}
    assert fakes.exchange.cancel_calls == [order.id]
    assert fakes.queue.visibility["receipt-0"] >= 1


# --- The schedule ---


def test_the_sweep_resends_what_is_due() -> None:
    clock = Clock()
    fakes = Fakes(clock=clock)
    due, later = stored_order(fakes, sweep_after=T0), stored_order(fakes, sweep_after=T0 + timedelta(hours=1))
    clock.now = T0 + timedelta(seconds=1)
    with app_client(fakes) as client:
        event = client.events.generate_cw_event("aws.events", "Scheduled Event", {}, ["arn:aws:events:rule/sweep"])
        client.lambda_.invoke("sweep_pending_orders", event)
    assert fakes.queue.sent == [due.id]
    assert later.id not in fakes.queue.sent


# --- The executions stream (Kinesis) ---


def test_reports_that_can_never_apply_are_set_aside_and_do_not_hold_the_shard() -> None:
    fakes = Fakes()
    order = stored_order(fakes)
    now = datetime.now(UTC)
    unknown = "00000000-0000-4000-8000-000000000000"
    payloads = [b"not a report", fill_report(unknown, 2, 10, now), fill_report(order.id, 3, 10, now)]
    with app_client(fakes) as client:
        response = client.lambda_.invoke("apply_executions", kinesis_event(client, payloads)).payload
    assert response == {"batchItemFailures": []}
    assert fakes.orders.orders[order.id].status is OrderStatus.FILLED
    set_aside = [json.loads(body) for body in fakes.failed_queue.sent]
    assert [entry["sequenceNumber"] for entry in set_aside] == ["1001", "1002"]
    assert set_aside[1]["reason"] == f"unknown order {unknown}"
    assert base64.b64decode(set_aside[0]["data"]) == b"not a report"


def test_an_order_that_could_not_be_written_is_retried_from_its_first_sequence_number() -> None:
    fakes = Fakes()
    written, unwritable = stored_order(fakes), stored_order(fakes)
    update = fakes.orders.update

    def update_all_but_one(order: Order, sweep_after: datetime | None) -> Order:
        if order.id == unwritable.id:
            raise RuntimeError("throttled")
        return update(order, sweep_after)

    fakes.orders.update = update_all_but_one  # type: ignore[method-assign]
    now = datetime.now(UTC)
    payloads = [fill_report(written.id, 1, 10, now), fill_report(unwritable.id, 2, 10, now)]
    with app_client(fakes) as client:
        response = client.lambda_.invoke("apply_executions", kinesis_event(client, payloads)).payload
    assert response == {"batchItemFailures": [{"itemIdentifier": "1002"}]}
    assert fakes.orders.orders[written.id].status is OrderStatus.FILLED
