"""The SQS, Kinesis and schedule handlers log with their invocation's Lambda context, as inject_lambda_context does."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.local import LambdaContext
from chalice.test import Client

from app import create_app
from chalicelib.adapters.queue import placement_message
from chalicelib.config import Settings
from chalicelib.domain.model import Order
from chalicelib.observability import logger, with_lambda_context
from tests.unit.fakes import SWEEP, Fakes
from tests.unit.helpers import T0, Clock, limit_terms
from tests.unit.in_process import fill_report, kinesis_event, sqs_event

pytestmark = pytest.mark.unit


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the Powertools logger writes while the test runs, one JSON object a line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    # The handlers' own logger, and the one the services log through.
    loggers = (logger, logging.getLogger("chalicelib"))
    for each in loggers:
        each.addHandler(handler)
    try:
        yield stream
    finally:
        for each in loggers:
            each.removeHandler(handler)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_a_records_lines_name_the_invocation_they_belong_to(log_lines: io.StringIO) -> None:
    fakes = Fakes()
    order = fakes.orders.add(Order.create("acme", limit_terms(), T0), T0 + SWEEP)
    app = create_app(fakes.dependencies, Settings())
    with Client(app) as client:
        event = sqs_event(client, [placement_message(order.id)])
    # Called as Lambda calls it, with a context whose request id the test knows.
    context = LambdaContext("brokerage-dev-place_orders", memory_size=512)
    app.handler_map["place_orders"](event, context)
    logger.info("after the invocation")

    records = parsed(log_lines)
    attempt = next(record for record in records if record["message"] == "placement attempt")
    # Logged on a worker thread, with the record's own keys and the invocation's.
    assert attempt["order_id"] == order.id
    assert attempt["function_request_id"] == context.aws_request_id
    assert attempt["function_name"] == "brokerage-dev-place_orders"
    assert attempt["function_memory_size"] == 512
    assert isinstance(attempt["cold_start"], bool)
    after = next(record for record in records if record["message"] == "after the invocation")
    assert "function_request_id" not in after  # the keys end with the invocation


def test_the_stream_and_the_schedule_handlers_name_their_invocation_too(log_lines: io.StringIO) -> None:
    clock = Clock()
    fakes = Fakes(clock=clock)
    due = fakes.orders.add(Order.create("acme", limit_terms(), T0), T0)
    clock.now = T0 + SWEEP
    app = create_app(fakes.dependencies, Settings())
    with Client(app) as client:
        scheduled = client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [])
        reports = kinesis_event(client, [fill_report(due.id, 1, 10, T0)])
    sweep, apply = LambdaContext("sweep", memory_size=512), LambdaContext("apply", memory_size=512)
    app.handler_map["sweep_pending_orders"](scheduled, sweep)
    app.handler_map["apply_executions"](reports, apply)

    by_message = {record["message"]: record for record in parsed(log_lines)}
    assert by_message["re-enqueued stuck pending orders"]["function_request_id"] == sweep.aws_request_id
    assert by_message["executions applied"]["function_request_id"] == apply.aws_request_id


def test_only_the_first_invocation_of_a_function_is_its_cold_start() -> None:
    seen: list[dict[str, Any]] = []
    handler = with_lambda_context(lambda event, context: seen.append(logger.thread_safe_get_current_keys()))
    first, second = LambdaContext("f", memory_size=128), LambdaContext("f", memory_size=128)
    handler({}, first)
    handler({}, second)
    assert [(keys["cold_start"], keys["function_request_id"]) for keys in seen] == [
        (True, first.aws_request_id),
        (False, second.aws_request_id),
    ]
