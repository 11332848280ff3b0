"""HttpExchange never sends a placement later than its claim's lease allows, however long the credential took.

Placement checks the lease before it calls the adapter; the credential read (Secrets Manager, or waiting for
another thread's read) and a refusal's second send come after that check. A send that lands after the lease
may land after a cancel took "unknown order" for final: a live order at the exchange that we show canceled.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chalicelib.adapters.exchange import ExchangeUnavailable, HttpExchange
from chalicelib.domain.model import Order, OrderStatus
from chalicelib.service.placement import PlacementOutcome, place_order
from devstack.processes import LOOPBACK
from tests.unit.fakes import TIMINGS, FakeRepository, Fakes
from tests.unit.fakes_aws import SlowCredential
from tests.unit.helpers import T0, Clock, limit_terms

pytestmark = pytest.mark.unit

LEASE = timedelta(seconds=15)
# Connect (at most 2 s) + read: one call's budget, 12 s as bootstrap.exchange_call_s counts it.
TIMEOUT_S = 10.0
SEND_BY = T0 + LEASE - timedelta(seconds=12)
ACCEPTED = (201, {"exchange_order_id": "X1"})
REFUSED = (401, {"error": "missing or wrong credential"})


@dataclass
class Venue:
    """Answers with `answers` in turn (the last one from then on); remembers each request's method and credential."""

    answers: list[tuple[int, dict[str, Any]]] = field(default_factory=lambda: [ACCEPTED])
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def venue() -> Iterator[Venue]:
    state = Venue()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.seen.append((self.command, self.headers.get("Authorization")))
            status, payload = state.answers.pop(0) if len(state.answers) > 1 else state.answers[0]
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_DELETE = do_GET = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://{LOOPBACK}:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def takes(clock: Clock, seconds: float) -> Callable[[], None]:
    def read() -> None:
        clock.now += timedelta(seconds=seconds)

    return read


def claimed_order() -> Order:
    """An order claimed for placement at T0, its lease running until T0 + LEASE."""
    order = Order.create("acct-1", limit_terms(), T0 - timedelta(seconds=1))
    return order.claimed_for_placement(T0, T0 + LEASE)


def exchange(venue: Venue, clock: Clock, read_s: float = 0.0, refresh_s: float = 0.0) -> HttpExchange:
    credential = SlowCredential("s3cret", takes(clock, read_s), takes(clock, refresh_s))
    return HttpExchange(venue.url, timeout_s=TIMEOUT_S, credential=credential, clock=clock)


def test_a_credential_read_that_ends_past_the_send_by_time_sends_nothing(venue: Venue) -> None:
    clock = Clock(T0)
    # Placement's own check passed at T0; the read (a cold Secrets Manager, a queue on its lock) ends after SEND_BY.
    slow = exchange(venue, clock, read_s=(SEND_BY - T0).total_seconds() + 1)

    with pytest.raises(ExchangeUnavailable, match="would be sent after the placement lease"):
        slow.place(claimed_order())

    assert venue.seen == []


def test_a_credential_read_that_ends_by_the_send_by_time_sends(venue: Venue) -> None:
    clock = Clock(T0)

    ack = exchange(venue, clock, read_s=(SEND_BY - T0).total_seconds()).place(claimed_order())

    assert ack.exchange_order_id == "X1"
    assert venue.seen == [("POST", "Bearer s3cret")]


def test_a_refusal_is_not_sent_again_once_reading_the_credential_again_ran_past_the_send_by_time(venue: Venue) -> None:
    clock = Clock(T0)
    venue.answers = [REFUSED, ACCEPTED]
    slow_refresh = exchange(venue, clock, refresh_s=(SEND_BY - T0).total_seconds() + 1)

    with pytest.raises(ExchangeUnavailable, match="would be sent after the placement lease"):
        slow_refresh.place(claimed_order())

    assert venue.seen == [("POST", "Bearer s3cret")]  # the refused send only


def test_cancels_status_queries_and_unclaimed_orders_have_no_send_by_time(venue: Venue) -> None:
    clock = Clock(T0 + timedelta(hours=1))  # long past any lease
    late = exchange(venue, clock, read_s=60)
    unclaimed = dataclasses.replace(claimed_order(), placing_until=None)

    late.place(unclaimed)
    venue.answers = [(404, {"error": "unknown order"})]
    late.cancel(unclaimed.id)
    assert late.status(unclaimed.id) is None

    assert [method for method, _ in venue.seen] == ["POST", "DELETE", "GET"]


def test_placement_with_a_slow_credential_retries_later_and_nothing_reaches_the_exchange(venue: Venue) -> None:
    clock, repo = Clock(T0), FakeRepository()
    order = repo.add(Order.create("acct-1", limit_terms(), T0), T0 + timedelta(minutes=1))
    fakes = Fakes(orders=repo, clock=clock, timings=dataclasses.replace(TIMINGS, placement_lease=LEASE))
    # Placement's check before the call passes (the whole lease is left); the read then takes most of it.
    dependencies = dataclasses.replace(fakes.dependencies(), exchange=exchange(venue, clock, read_s=8))

    result = place_order(order.id, 1, dependencies)

    assert result.outcome is PlacementOutcome.RETRY
    assert venue.seen == []
    stored = repo.orders[order.id]
    assert stored.status is OrderStatus.PENDING
    assert "placement lease" in (stored.last_error or "")
