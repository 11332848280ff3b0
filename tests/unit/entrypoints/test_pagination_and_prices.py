"""Bounds at the HTTP edge: number texts and price ticks, executions pages and their cursor, correlation ids."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.adapters.dynamodb import text_or_none
from chalicelib.adapters.repository import ExecutionCursor, execution_page
from chalicelib.domain.model import ExecType, ExecutionReport, Order, OrderTerms, OrderType, Side
from chalicelib.entrypoints.execution_query import (
    DEFAULT_EXECUTIONS_PAGE,
    MAX_EXECUTIONS_PAGE,
    decode_execution_cursor,
    encode_execution_cursor,
    parse_executions_query,
)
from chalicelib.entrypoints.http import correlation_id_for
from chalicelib.entrypoints.json_body import MAX_NUMBER_CHARACTERS
from chalicelib.entrypoints.request_models import (
    InvalidOrder,
    InvalidQuery,
    parse_order_request,
)
from chalicelib.service import client_orders
from tests.unit.fakes import Fakes
from tests.unit.in_process import app_client, bearer

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
ISIN = "US0378331005"


def body_with(price_text: str = "187.25", quantity_text: str = "10", client_order_id: str | None = None) -> str:
    key = "" if client_order_id is None else f', "client_order_id": "{client_order_id}"'
    return (
        f'{{"type": "limit", "side": "buy", "instrument": "{ISIN}",'
        f' "quantity": {quantity_text}, "limit_price": {price_text}{key}}}'
    )


def field_errors(raw_body: str) -> dict[str, str]:
    with pytest.raises(InvalidOrder) as caught:
        parse_order_request(raw_body)
    return {error.field: error.message for error in caught.value.errors}


# --- number texts are measured before they are converted; prices are stored on the tick


def test_a_price_of_16_kb_of_zeros_is_422_naming_limit_price() -> None:
    errors = field_errors(body_with(price_text="100." + "0" * 16_000))
    assert list(errors) == ["limit_price"]
    assert f"at most {MAX_NUMBER_CHARACTERS} characters" in errors["limit_price"]
    assert "16004" in errors["limit_price"]


@pytest.mark.parametrize(
    "quantity_text", ["1" + "0" * MAX_NUMBER_CHARACTERS, "10." + "0" * MAX_NUMBER_CHARACTERS, "1" + "0" * 5000]
)
def test_a_quantity_written_too_long_is_422_naming_quantity(quantity_text: str) -> None:
    errors = field_errors(body_with(quantity_text=quantity_text))
    assert list(errors) == ["quantity"]
    assert f"at most {MAX_NUMBER_CHARACTERS} characters" in errors["quantity"]


def test_a_price_written_in_exactly_the_longest_text_is_read_and_put_on_the_tick() -> None:
    longest = "100." + "0" * (MAX_NUMBER_CHARACTERS - 4)
    assert len(longest) == MAX_NUMBER_CHARACTERS
    terms = parse_order_request(body_with(price_text=longest))
    assert text_or_none(terms.limit_price) == "100.00"
    assert "limit_price" in field_errors(body_with(price_text=longest + "0"))


@pytest.mark.parametrize("price_text", ["100.1", "100.10", "100.1000", "1.001e2", "10010e-2", "100.100000000"])
def test_one_price_written_many_ways_is_stored_as_one_text(price_text: str) -> None:
    terms = parse_order_request(body_with(price_text=price_text))
    assert text_or_none(terms.limit_price) == "100.10"  # what the orders table stores
    assert terms.limit_price is not None
    assert terms.limit_price.as_tuple().exponent == -2


@pytest.mark.parametrize("price_text", ["1e2", "100", "100.0", "1E+2"])
def test_whole_prices_get_two_places_too(price_text: str) -> None:
    assert text_or_none(parse_order_request(body_with(price_text=price_text)).limit_price) == "100.00"


def test_prices_off_the_tick_are_still_refused_not_rounded() -> None:
    for price_text in ("100.001", "100.105", "0.001"):
        assert "decimal places" in field_errors(body_with(price_text=price_text))["limit_price"]


def test_a_repeated_request_with_the_price_written_otherwise_is_the_same_order() -> None:
    fakes = Fakes()
    dependencies = fakes.dependencies()
    first = client_orders.create_order(
        "acct-1", parse_order_request(body_with("100.1", client_order_id="k-1")), dependencies
    )
    again = client_orders.create_order(
        "acct-1", parse_order_request(body_with("100.1000", client_order_id="k-1")), dependencies
    )
    assert first.created
    assert not again.created
    assert again.order.id == first.order.id
    assert len(fakes.orders.orders) == 1


def test_a_replay_of_an_order_stored_before_the_tick_still_has_the_same_terms() -> None:
    # Stored as sent before prices were quantized ("100.1"); the same request now arrives as 100.10.
    stored = Order.create("acct-1", OrderTerms(OrderType.LIMIT, Side.BUY, ISIN, 10, Decimal("100.1"), "k-1"), T0)
    assert stored.has_same_terms(parse_order_request(body_with("100.1", client_order_id="k-1")))


# --- the correlation id is matched whole


@pytest.mark.parametrize("given", ["abc\n", "abc\r\n", "abc\nforged-log-line"])
def test_a_correlation_id_with_a_line_break_is_refused(given: str) -> None:
    assert correlation_id_for({"x-correlation-id": given}, {"requestId": "gw-1"}) == "gw-1"


# --- GET /orders/{order_id}/executions: its query and its cursor


def test_the_executions_query_defaults_to_the_first_page_of_100() -> None:
    query = parse_executions_query(None)
    assert (query.limit, query.after) == (DEFAULT_EXECUTIONS_PAGE, None) == (100, None)
    assert parse_executions_query({"limit": ["500"]}).limit == MAX_EXECUTIONS_PAGE


def _cursor_text(fields: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": ["0"]}, "limit"),
        ({"limit": ["501"]}, "limit"),
        ({"limit": ["ten"]}, "limit"),
        ({"limit": ["1", "2"]}, "limit"),
        ({"after": ["!"]}, "after"),
        ({"after": ["a" * 1025]}, "after"),
        ({"after": ["bm90IGEgY3Vyc29y"]}, "after"),  # base64 of "not a cursor"
        ({"after": [_cursor_text(["2026-12-01T09:30:00", 1, "E-1"])]}, "after"),  # no UTC offset
        ({"after": [_cursor_text(["2026-12-01T09:30:00Z", "1", "E-1"])]}, "after"),  # seq as text
        ({"after": [_cursor_text(["2026-12-01T09:30:00Z", True, "E-1"])]}, "after"),
        ({"after": [_cursor_text(["2026-12-01T09:30:00Z", 1, ""])]}, "after"),
        ({"after": [_cursor_text(["2026-12-01T09:30:00Z", 1])]}, "after"),
        ({"page": ["2"]}, "page"),
    ],
)
def test_executions_query_problems_are_422s_naming_the_parameter(params: dict[str, list[str]], field: str) -> None:
    with pytest.raises(InvalidQuery) as raised:
        parse_executions_query(params)
    assert [error.field for error in raised.value.errors] == [field]


def test_an_execution_cursor_round_trips_even_with_the_longest_exec_id() -> None:
    for exec_id in ("E-1", "\U0001f642" * 128, "x" * 128):
        cursor = ExecutionCursor(T0 + timedelta(microseconds=7), 2**63, exec_id)
        text = encode_execution_cursor(cursor)
        assert decode_execution_cursor(text) == cursor
        assert parse_executions_query({"after": [text]}).after == cursor


def report(n: int, at: datetime, seq: int | None = None) -> ExecutionReport:
    return ExecutionReport(
        exec_id=f"E-{n:03d}",
        order_id="o-1",
        exchange_order_id="X-1",
        exec_type=ExecType.PARTIAL_FILL,
        last_qty=1,
        last_price=Decimal("10.00"),
        cum_qty=n,
        leaves_qty=100 - n,
        avg_price=Decimal("10.00"),
        transact_time=at,
        seq=n if seq is None else seq,
    )


def test_pages_of_executions_walk_every_report_oldest_first_exactly_once() -> None:
    # exec_ids in the opposite order of time (the table's own order), and two reports at one moment.
    reports = [report(n, T0 + timedelta(seconds=10 - n)) for n in range(1, 8)]
    reports.append(report(50, T0 + timedelta(seconds=3), seq=1))
    oldest_first = sorted(reports, key=lambda r: (r.transact_time, r.seq))
    seen: list[ExecutionReport] = []
    pages, after = 0, None
    while True:
        page = execution_page(reports[::-1], after, limit=3)
        seen.extend(page.executions)
        pages += 1
        if page.next is None:
            break
        assert len(page.executions) == 3
        after = page.next
    assert seen == oldest_first
    assert pages == 3


def test_a_full_last_page_has_no_next() -> None:
    reports = [report(n, T0 + timedelta(seconds=n)) for n in range(1, 5)]
    assert execution_page(reports, None, limit=4).next is None
    assert execution_page(reports, None, limit=3).next == ExecutionCursor.of(reports[2])


def test_a_report_stored_after_the_cursor_is_found_by_the_next_page() -> None:
    reports = [report(n, T0 + timedelta(seconds=n)) for n in range(1, 4)]
    first = execution_page(reports, None, limit=2)
    late = report(9, T0 + timedelta(seconds=5))
    second = execution_page([*reports, late], first.next, limit=2)
    assert second.executions == [reports[2], late]


# --- the route, in process with fakes


def fill_reports(fakes: Fakes, order_id: str, count: int) -> list[ExecutionReport]:
    reports = [
        ExecutionReport(
            exec_id=f"exec-{count - n:04d}",
            order_id=order_id,
            exchange_order_id="X-1",
            exec_type=ExecType.PARTIAL_FILL,
            last_qty=1,
            last_price=Decimal("187.25"),
            cum_qty=n,
            leaves_qty=count - n,
            avg_price=Decimal("187.25"),
            transact_time=T0 + timedelta(milliseconds=n),
            seq=n,
        )
        for n in range(1, count + 1)
    ]
    fakes.executions.add_many(reports)
    return reports


def test_get_executions_pages_with_limit_and_after_and_keeps_its_shape() -> None:
    fakes = Fakes()
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        created = client.http.post(
            "/orders", headers=headers, body=json.dumps({**json.loads(body_with()), "client_order_id": "e-1"})
        )
        order_id = created.json_body["id"]
        reports = fill_reports(fakes, order_id, 7)
        ids: list[str] = []
        path = f"/orders/{order_id}/executions?limit=3"
        bodies = []
        while True:
            answer = client.http.get(path, headers=headers)
            assert answer.status_code == 200
            bodies.append(answer.json_body)
            ids.extend(execution["id"] for execution in answer.json_body["executions"])
            if answer.json_body["next"] is None:
                break
            path = f"/orders/{order_id}/executions?limit=3&after={answer.json_body['next']}"
        whole = client.http.get(f"/orders/{order_id}/executions", headers=headers).json_body
        bad_limit = client.http.get(f"/orders/{order_id}/executions?limit=0", headers=headers)
        bad_after = client.http.get(f"/orders/{order_id}/executions?after=nope", headers=headers)
        stranger = client.http.get(f"/orders/{order_id}/executions?limit=1", headers=bearer(fakes, "other"))
    assert ids == [r.exec_id for r in reports]
    assert [len(body["executions"]) for body in bodies] == [3, 3, 1]
    assert set(bodies[0]) == {"order_id", "executions", "next"}
    assert (len(whole["executions"]), whole["next"]) == (7, None)
    assert bad_limit.status_code == 422
    assert bad_limit.json_body["errors"][0]["field"] == "limit"
    assert bad_after.status_code == 422
    assert bad_after.json_body["errors"][0]["field"] == "after"
    assert stranger.status_code == 404
