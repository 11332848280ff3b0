"""The SQS, Kinesis and schedule handlers in process through chalice.test with fakes: which records fail, and why."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.adapters.queue import cancel_message, placement_message
from chalicelib.domain.model import Order, OrderStatus
from tests.unit.fakes import LEASE, SWEEP, FakeExchange, Fakes
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


def test_an_unanswered_last_attempt_is_asked_about_again_by_a_new_message_not_this_one() -> None:
    # This message is on its last receive: handing it back would send it to the DLQ.
    fakes = Fakes(exchange=FakeExchange(["unavailable"]))
    order = stored_order(fakes)
    with app_client(fakes) as client:
        event = sqs_event(client, [placement_message(order.id)], receive_count=3)
        response = client.lambda_.invoke("place_orders", event).payload
    assert response == {"batchItemFailures": []}
    assert fakes.orders.orders[order.id].status is OrderStatus.PENDING
    assert fakes.queue.sent == [order.id]
    assert fakes.queue.delays[0] >= LEASE.total_seconds()  # once nothing sent can still land
    assert fakes.dead_letters.sent == []


def exhausted_order(fakes: Fakes) -> Order:
    """Pending, every attempt made, the last one long over: only the exchange's word is missing."""
    order = stored_order(fakes)
    claimed = fakes.orders.update(order.claimed_for_placement(T0, T0 + LEASE), sweep_after=T0 + SWEEP)
    return fakes.orders.update(claimed.attempt_failed("HTTP 503", T0, attempt=3), sweep_after=T0 + SWEEP)


def test_an_order_the_exchange_does_not_know_fails_and_its_message_goes_to_the_dlq() -> None:
    fakes = Fakes(clock=Clock(T0 + LEASE))
    order = exhausted_order(fakes)
    body = placement_message(order.id)
    with app_client(fakes) as client:
        response = client.lambda_.invoke("place_orders", sqs_event(client, [body], receive_count=1)).payload
    assert response == {"batchItemFailures": []}
    assert fakes.orders.orders[order.id].status is OrderStatus.FAILED
    assert fakes.dead_letters.sent == [body]


def test_a_dlq_that_cannot_take_the_message_leaves_it_to_the_redrive_policy() -> None:
    fakes = Fakes(clock=Clock(T0 + LEASE))
    order = exhausted_order(fakes)
    fakes.dead_letters.down = True
    with app_client(fakes) as client:
        event = sqs_event(client, [placement_message(order.id)], receive_count=3)
        response = client.lambda_.invoke("place_orders", event).payload
    assert response == {"batchItemFailures": [{"itemIdentifier": "message-0"}]}
    assert fakes.queue.visibility == {"receipt-0": 0}
    assert fakes.orders.orders[order.id].status is OrderStatus.FAILED


def test_an_order_the_exchange_holds_is_placed_though_every_answer_was_lost() -> None:
    fakes = Fakes(clock=Clock(T0 + LEASE), exchange=FakeExchange())
    order = exhausted_order(fakes)
    fakes.exchange.accepted[order.id] = "X9"
    with app_client(fakes) as client:
        event = sqs_event(client, [placement_message(order.id)], receive_count=1)
        response = client.lambda_.invoke("place_orders", event).payload
    assert response == {"batchItemFailures": []}
    placed = fakes.orders.orders[order.id]
    assert (placed.status, placed.exchange_order_id) == (OrderStatus.PLACED, "X9")
    assert fakes.exchange.calls == []  # asked, never sent again
    assert fakes.dead_letters.sent == []


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
