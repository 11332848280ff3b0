"""HttpExchange.cancel and HttpExchange.status against an in-process HTTP server that answers as scripted."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.adapters.exchange import CancelOutcome, ExchangeUnavailable, HttpExchange
from chalicelib.adapters.venue_credential import SecretsManagerCredential
from chalicelib.config import Settings
from chalicelib.domain.model import Order, OrderStatus, OrderTerms, OrderType, Side, TimeInForce, VenueOrderState
from devstack.processes import LOOPBACK, free_port
from tests.unit.fakes_aws import FakeSecretsManager
from tests.unit.venue import market_order

pytestmark = pytest.mark.unit


@dataclass
class Answer:
    status: int
    body: bytes = b""
    delay_s: float = 0.0


def json_answer(status: int, payload: Any) -> Answer:
    return Answer(status, json.dumps(payload).encode())


@dataclass
class FakeExchangeServer:
    """Answers every request with `answer` and remembers what it was asked."""

    answer: Answer = field(default_factory=lambda: Answer(200))
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def fake() -> Iterator[FakeExchangeServer]:
    state = FakeExchangeServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_DELETE(self) -> None:
            self._answer()

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            state.seen.append((self.command, self.path, self.rfile.read(length)))
            answer = state.answer
            if answer.delay_s:
                time.sleep(answer.delay_s)
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

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


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (
            json_answer(200, {"status": "cancel_accepted", "client_order_id": "o-1", "exchange_order_id": "X1"}),
            CancelOutcome.CANCEL_ACCEPTED,
        ),
        (json_answer(409, {"error": "too late to cancel: order is filled"}), CancelOutcome.TOO_LATE),
        (json_answer(404, {"error": "unknown order"}), CancelOutcome.UNKNOWN_ORDER),
    ],
    ids=["200", "409", "404"],
)
def test_each_verdict_of_the_exchange_is_an_outcome(
    fake: FakeExchangeServer, answer: Answer, outcome: CancelOutcome
) -> None:
    fake.answer = answer

    assert HttpExchange(fake.url, timeout_s=5).cancel("o-1") is outcome


def test_an_order_is_sent_with_its_time_in_force_expiry_and_stop_price(fake: FakeExchangeServer) -> None:
    fake.answer = json_answer(201, {"exchange_order_id": "X1"})
    terms = OrderTerms(
        OrderType.STOP_LIMIT,
        Side.SELL,
        "US0378331005",
        5,
        Decimal("98.00"),
        time_in_force=TimeInForce.GTD,
        expires_at=datetime(2026, 12, 2, 15, 0, tzinfo=UTC),
        stop_price=Decimal("99.50"),
    )
    order = Order.create("acct-1", terms, datetime(2026, 12, 1, tzinfo=UTC))
    HttpExchange(fake.url, timeout_s=5).place(order)
    HttpExchange(fake.url, timeout_s=5).place(market_order(10))

    (gtd_method, gtd_path, gtd_body), (_, _, market_body) = fake.seen
    assert (gtd_method, gtd_path) == ("POST", "/orders")
    assert json.loads(gtd_body) == {
        "client_order_id": order.id,
        "instrument": "US0378331005",
        "side": "sell",
        "type": "stop_limit",
        "quantity": 5,
        "limit_price": 98.0,
        "stop_price": 99.5,
        "time_in_force": "gtd",
        "expires_at": "2026-12-02T15:00:00Z",
    }
    sent = json.loads(market_body)
    assert (sent["type"], sent["time_in_force"], sent["expires_at"], sent["stop_price"]) == (
        "market",
        "day",
        None,
        None,
    )


def test_the_cancel_is_a_delete_of_the_order_with_the_id_as_one_path_segment(fake: FakeExchangeServer) -> None:
    HttpExchange(f"{fake.url}/", timeout_s=5).cancel("a/b c?d&e%f")

    assert fake.seen == [("DELETE", "/orders/a%2Fb%20c%3Fd%26e%25f", b"")]


@pytest.mark.parametrize(
    "answer",
    [
        json_answer(503, {"error": "connection not available"}),
        json_answer(500, {"error": "internal error"}),
        Answer(502, b"<html>bad gateway</html>"),
        json_answer(429, {"error": "slow down"}),
        json_answer(408, {"error": "request timeout"}),
        json_answer(400, {"error": "bad request"}),
        json_answer(401, {"error": "unauthorized"}),
        json_answer(405, {"error": "DELETE not allowed here"}),
        # A 404 that is not the exchange's verdict on the order: a wrong URL, a proxy.
        json_answer(404, {"error": "no such path: /v2/orders/o-1"}),
        Answer(404, b"not found"),
        Answer(204),
        json_answer(202, {"status": "cancel_pending"}),
    ],
    ids=lambda answer: str(answer.status),
)
def test_anything_else_is_unavailable_and_not_retried_here(fake: FakeExchangeServer, answer: Answer) -> None:
    fake.answer = answer

    with pytest.raises(ExchangeUnavailable):
        HttpExchange(fake.url, timeout_s=5).cancel("o-1")

    # Retries belong to the queue.
    assert len(fake.seen) == 1


def test_the_exchanges_error_is_the_reason(fake: FakeExchangeServer) -> None:
    fake.answer = json_answer(503, {"error": "connection not available"})
    with pytest.raises(ExchangeUnavailable, match=r"^connection not available$"):
        HttpExchange(fake.url, timeout_s=5).cancel("o-1")

    fake.answer = Answer(502, b"<html>bad gateway</html>")
    with pytest.raises(ExchangeUnavailable, match=r"^HTTP 502$"):
        HttpExchange(fake.url, timeout_s=5).cancel("o-1")


def test_a_slow_exchange_is_unavailable_after_the_timeout(fake: FakeExchangeServer) -> None:
    fake.answer = Answer(200, b"{}", delay_s=1.0)

    started = time.monotonic()
    with pytest.raises(ExchangeUnavailable, match="ReadTimeoutError"):
        HttpExchange(fake.url, timeout_s=0.2).cancel("o-1")

    assert time.monotonic() - started < 0.9


def test_an_exchange_that_does_not_listen_is_unavailable() -> None:
    with pytest.raises(ExchangeUnavailable, match="unreachable"):
        HttpExchange(f"http://{LOOPBACK}:{free_port()}", timeout_s=5).cancel("o-1")


# --- The order status query ---


def status_answer(**changes: Any) -> dict[str, Any]:
    """The exchange's 200 answer about order o-1, with changes."""
    return {
        "client_order_id": "o-1",
        "exchange_order_id": "X1",
        "status": "partially_filled",
        "cum_qty": 40,
        "leaves_qty": 60,
        "avg_price": 187.2533,
        "transact_time": "2026-11-23T21:07:06.123Z",
        **changes,
    }


def test_the_status_answer_is_the_venues_order_state(fake: FakeExchangeServer) -> None:
    fake.answer = json_answer(200, status_answer())

    state = HttpExchange(fake.url, timeout_s=5).status("o-1")

    assert state == VenueOrderState(
        exchange_order_id="X1",
        status=OrderStatus.PARTIALLY_FILLED,
        cum_qty=40,
        leaves_qty=60,
        avg_price=Decimal("187.2533"),
    )
    # The number's own digits, not the binary float's expansion.
    assert state is not None
    assert str(state.avg_price) == "187.2533"


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("new", OrderStatus.PLACED),
        ("partially_filled", OrderStatus.PARTIALLY_FILLED),
        ("filled", OrderStatus.FILLED),
        ("canceled", OrderStatus.CANCELED),
        ("expired", OrderStatus.EXPIRED),
        ("rejected", OrderStatus.REJECTED),
    ],
)
def test_each_status_word_of_the_exchange_is_ours(fake: FakeExchangeServer, word: str, status: OrderStatus) -> None:
    fake.answer = json_answer(200, status_answer(status=word))

    state = HttpExchange(fake.url, timeout_s=5).status("o-1")

    assert state is not None
    assert state.status is status


def test_no_fill_yet_is_no_average_price(fake: FakeExchangeServer) -> None:
    fake.answer = json_answer(200, status_answer(status="new", cum_qty=0, leaves_qty=100, avg_price=None))

    state = HttpExchange(fake.url, timeout_s=5).status("o-1")

    assert state is not None
    assert (state.status, state.cum_qty, state.leaves_qty, state.avg_price) == (OrderStatus.PLACED, 0, 100, None)


def test_the_unknown_order_verdict_is_none(fake: FakeExchangeServer) -> None:
    fake.answer = json_answer(404, {"error": "unknown order"})

    assert HttpExchange(fake.url, timeout_s=5).status("o-1") is None


def test_the_status_query_is_a_get_of_the_order_with_the_id_as_one_path_segment(fake: FakeExchangeServer) -> None:
    fake.answer = json_answer(200, status_answer(client_order_id="a/b c?d&e%f"))

    HttpExchange(f"{fake.url}/", timeout_s=5).status("a/b c?d&e%f")

    assert fake.seen == [("GET", "/orders/a%2Fb%20c%3Fd%26e%25f", b"")]


@pytest.mark.parametrize(
    "answer",
    [
        json_answer(503, {"error": "order status not available"}),
        json_answer(500, {"error": "internal error"}),
        Answer(502, b"<html>bad gateway</html>"),
        json_answer(429, {"error": "slow down"}),
        json_answer(400, {"error": "bad request"}),
        json_answer(405, {"error": "GET not allowed here"}),
        # A 404 that is not the exchange's verdict on the order: a wrong URL, a proxy.
        json_answer(404, {"error": "no such path: /v2/orders/o-1"}),
        Answer(404, b"not found"),
        Answer(204),
        json_answer(201, status_answer()),
        Answer(200, b"<html>ok</html>"),
        json_answer(200, [status_answer()]),
        json_answer(200, status_answer(status="pending_new")),
        json_answer(200, status_answer(status=None)),
        json_answer(200, {key: value for key, value in status_answer().items() if key != "cum_qty"}),
        json_answer(200, status_answer(client_order_id="o-2")),
        json_answer(200, status_answer(exchange_order_id="")),
        json_answer(200, status_answer(cum_qty=True)),
        json_answer(200, status_answer(leaves_qty=-1)),
        json_answer(200, status_answer(cum_qty=1.5)),
        json_answer(200, status_answer(avg_price="187.25")),
        json_answer(200, status_answer(avg_price=0)),
        Answer(200, json.dumps(status_answer()).replace("187.2533", "NaN").encode()),
    ],
    ids=lambda answer: f"{answer.status}:{answer.body[:60]!r}",
)
def test_anything_but_a_verdict_or_a_readable_state_is_unavailable(fake: FakeExchangeServer, answer: Answer) -> None:
    fake.answer = answer

    with pytest.raises(ExchangeUnavailable):
        HttpExchange(fake.url, timeout_s=5).status("o-1")

    # Retries belong to the caller (backoff, then the sweep).
    assert len(fake.seen) == 1


def test_the_reason_says_what_was_wrong(fake: FakeExchangeServer) -> None:
    exchange = HttpExchange(fake.url, timeout_s=5)
    fake.answer = json_answer(503, {"error": "order status not available"})
    with pytest.raises(ExchangeUnavailable, match=r"^order status not available$"):
        exchange.status("o-1")

    fake.answer = json_answer(200, status_answer(status="pending_new"))
    with pytest.raises(ExchangeUnavailable, match=r"unreadable order status.*unknown status 'pending_new'"):
        exchange.status("o-1")

    fake.answer = json_answer(200, status_answer(client_order_id="o-2"))
    with pytest.raises(ExchangeUnavailable, match=r"about order 'o-2', not 'o-1'"):
        exchange.status("o-1")

    fake.answer = Answer(200, b"<html>ok</html>")
    with pytest.raises(ExchangeUnavailable, match=r"missing field\(s\): client_order_id, exchange_order_id"):
        exchange.status("o-1")


def test_a_slow_status_query_is_unavailable_after_the_timeout(fake: FakeExchangeServer) -> None:
    fake.answer = Answer(200, json.dumps(status_answer()).encode(), delay_s=1.0)

    started = time.monotonic()
    with pytest.raises(ExchangeUnavailable, match="ReadTimeoutError"):
        HttpExchange(fake.url, timeout_s=0.2).status("o-1")

    assert time.monotonic() - started < 0.9


def test_a_status_query_to_an_exchange_that_does_not_listen_is_unavailable() -> None:
    with pytest.raises(ExchangeUnavailable, match="unreachable"):
        HttpExchange(f"http://{LOOPBACK}:{free_port()}", timeout_s=5).status("o-1")


def test_a_connection_closed_without_an_answer_is_unavailable() -> None:
    # As the simulator's lost-answer knobs do: the exchange reads the request and hangs up.
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        port = listener.getsockname()[1]

        def hang_up() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        with pytest.raises(ExchangeUnavailable, match="unreachable"):
            HttpExchange(f"http://{LOOPBACK}:{port}", timeout_s=5).status("o-1")
        thread.join(timeout=5)


# --- The venue credential: a bearer token on every call, read again once when refused ---

SECRET = "exchange-credential"


@dataclass
class ScriptedVenue:
    """Answers requests with `answers` in turn (the last one from then on); remembers each Authorization header."""

    answers: list[Answer] = field(default_factory=lambda: [json_answer(201, {"exchange_order_id": "X1"})])
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def venue() -> Iterator[ScriptedVenue]:
    state = ScriptedVenue()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self._answer()

        def do_DELETE(self) -> None:
            self._answer()

        def do_GET(self) -> None:
            self._answer()

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.seen.append((self.command, self.headers.get("Authorization")))
            answer = state.answers.pop(0) if len(state.answers) > 1 else state.answers[0]
            self.send_response(answer.status)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

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


def with_secret(venue: ScriptedVenue, secrets: FakeSecretsManager) -> HttpExchange:
    return HttpExchange(venue.url, timeout_s=5, credential=SecretsManagerCredential(SECRET, secrets))


REFUSED = json_answer(401, {"error": "missing or wrong credential"})
STATUS_ANSWER = json_answer(
    200,
    {
        "client_order_id": "o-1",
        "exchange_order_id": "X1",
        "status": "new",
        "cum_qty": 0,
        "leaves_qty": 10,
        "avg_price": None,
    },
)


def test_order_entry_cancel_and_status_each_carry_the_credential(venue: ScriptedVenue) -> None:
    secrets = FakeSecretsManager({SECRET: "s3cret"})
    exchange = with_secret(venue, secrets)

    venue.answers = [json_answer(201, {"exchange_order_id": "X1"})]
    exchange.place(market_order(10))
    venue.answers = [json_answer(200, {"status": "cancel_accepted"})]
    exchange.cancel("o-1")
    venue.answers = [STATUS_ANSWER]
    exchange.status("o-1")

    assert venue.seen == [("POST", "Bearer s3cret"), ("DELETE", "Bearer s3cret"), ("GET", "Bearer s3cret")]
    assert secrets.reads == 1  # kept between calls


def test_a_refusal_reads_the_secret_again_and_sends_once_more_with_the_new_one(venue: ScriptedVenue) -> None:
    secrets = FakeSecretsManager({SECRET: "before-rotation"})
    exchange = with_secret(venue, secrets)
    venue.answers = [json_answer(201, {"exchange_order_id": "X0"})]
    exchange.place(market_order(10))
    secrets.secrets[SECRET] = "after-rotation"  # rotated: the venue now wants the new one

    venue.answers = [REFUSED, json_answer(201, {"exchange_order_id": "X1"})]
    ack = exchange.place(market_order(10))

    assert ack.exchange_order_id == "X1"
    assert [auth for _, auth in venue.seen[1:]] == ["Bearer before-rotation", "Bearer after-rotation"]
    assert secrets.reads == 2


@pytest.mark.parametrize("call", ["place", "cancel", "status"])
def test_a_credential_refused_again_after_reading_it_is_unavailable_and_an_error(
    venue: ScriptedVenue, call: str, caplog: pytest.LogCaptureFixture
) -> None:
    exchange = with_secret(venue, FakeSecretsManager({SECRET: "wrong"}))
    venue.answers = [REFUSED]

    with pytest.raises(ExchangeUnavailable, match="401"):
        if call == "place":
            exchange.place(market_order(10))
        else:
            getattr(exchange, call)("o-1")

    assert len(venue.seen) == 2  # the call, and once more after reading the secret again: no more
    assert any(record.levelname == "ERROR" and "401" in record.getMessage() for record in caplog.records)


def test_an_unreadable_secret_is_unavailable_and_nothing_reaches_the_venue(venue: ScriptedVenue) -> None:
    exchange = with_secret(venue, FakeSecretsManager({}))

    with pytest.raises(ExchangeUnavailable, match=r"credential unavailable.*ResourceNotFoundException"):
        exchange.place(market_order(10))
    with pytest.raises(ExchangeUnavailable, match="credential unavailable"):
        exchange.cancel("o-1")

    assert venue.seen == []


def test_the_production_adapter_reads_the_configured_secret_through_the_injected_client(venue: ScriptedVenue) -> None:
    secrets = FakeSecretsManager({"custom-secret-name": "from-the-secret"})
    settings = Settings(exchange_url=venue.url, exchange_credential_secret_name="custom-secret-name")

    exchange = bootstrap.exchange(settings, secretsmanager_client=secrets)
    assert secrets.reads == 0  # built without reading: a function that never calls the venue never does
    exchange.place(market_order(10))

    assert venue.seen == [("POST", "Bearer from-the-secret")]
