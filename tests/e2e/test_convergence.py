"""Our state converges to the exchange's when its answers or its reports are lost (issue 14), on the whole stack:
the simulator as a real process, the runner driving the real handlers, the reconciler fired by the runner."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from devstack.stack import LocalStack
from tests.e2e.helpers import Exchange, auth, dead_lettered, order_in_status
from tests.e2e.test_executions import agrees_with_exchange, post_order
from tests.polling import wait_until

# moto_only: reconciler logic vs simulator knobs; its GSI is test_dynamodb_repository's, the DLQ test_orders'.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]


def our_order(stack: LocalStack, order_id: str) -> dict[str, Any]:
    return dict(requests.get(f"{stack.api_url}/orders/{order_id}", headers=auth(stack.api_key), timeout=10).json())


def test_an_order_whose_every_placement_answer_is_lost_ends_as_the_exchange_has_it_not_failed(
    stack: LocalStack, exchange: Exchange
) -> None:
    # Accepted on the first attempt; every answer lost, so every attempt looks failed to us.
    exchange.configure(lost_answer_order_rate=1.0, reject_rate=0.0, cancel_rate=0.0)
    order = post_order(stack, quantity=20)
    final = wait_until(lambda: agrees_with_exchange(stack, exchange, order["id"]), timeout_s=90)
    assert final["status"] == "filled"
    assert final["failure_reason"] is None
    record = exchange.record(order["id"])
    assert record is not None
    assert record["accepted"] == 1  # placed once: the attempts after it were duplicates at the exchange


def test_a_fill_report_lost_for_good_is_recovered_by_the_reconciler(stack: LocalStack, exchange: Exchange) -> None:
    exchange.configure(feed_loss_rate=1.0, reject_rate=0.0, cancel_rate=0.0)
    order = post_order(stack, quantity=15)
    # No report reaches us, yet the exchange's status does: placement answer, then the reconciler.
    final = wait_until(lambda: agrees_with_exchange(stack, exchange, order["id"]), timeout_s=90)
    assert final["status"] == "filled"
    assert final["filled_quantity"] == 15
    record = exchange.record(order["id"])
    assert record is not None
    assert record["lost_exec_ids"]  # the reports really were lost


def test_no_order_fails_while_the_exchange_cannot_be_asked_and_it_fails_once_it_says_unknown(
    stack: LocalStack, exchange: Exchange, sqs: Any
) -> None:
    exchange.configure(failure_rate=1.0, status_failure_rate=1.0)
    order = post_order(stack)
    wait_until(lambda: (exchange.record(order["id"]) or {}).get("status_failures", 0) >= 2, timeout_s=90)
    assert our_order(stack, order["id"])["status"] == "pending"  # never failed on a guess

    exchange.configure(status_failure_rate=0.0)
    failed = wait_until(order_in_status(stack, order["id"], "failed", "placed"), timeout_s=90)
    assert failed["status"] == "failed"
    assert failed["failure_reason"] == "exchange unreachable"  # the detail is for operators (last_error, logs)

    wait_until(dead_lettered(sqs, stack, order["id"]), timeout_s=60)
