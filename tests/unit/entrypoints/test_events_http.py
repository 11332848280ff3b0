"""GET /events in process through chalice.test with in-memory fakes: paging, its cursor, 422s, accounts apart."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from chalice.app import Request
from openapi_schema_validator import OAS30Validator

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.adapters.streaming import START_POSITION, NewLogEntry, event_id_of
from chalicelib.domain.model import ExecType, ExecutionReport, Order, OrderStatus, OrderTerms, OrderType, Side
from chalicelib.domain.order_events import OrderEvent, OrderEventType
from chalicelib.entrypoints import event_query
from chalicelib.entrypoints.event_models import event_body
from chalicelib.entrypoints.http import NO_ACCOUNT_BODY
from chalicelib.entrypoints.openapi import openapi_document
from chalicelib.entrypoints.request_models import InvalidQuery
from tests.unit.fakes import Fakes
from tests.unit.in_process import app_client, bearer

pytestmark = pytest.mark.unit

START = event_id_of(START_POSITION)


def log_events(fakes: Fakes, account_id: str, count: int, first: int = 1) -> list[str]:
    """Log `count` events of one order for the account; their ids."""
    entries = [
        NewLogEntry(
            change_key=f"order-{account_id}#{n}#0",
            order_id=f"order-{account_id}",
            type="created" if n == 1 else "placed",
            body={"type": "created" if n == 1 else "placed", "time": "2026-12-02T09:30:00.000Z", "n": n},
        )
        for n in range(first, first + count)
    ]
    return [event.event_id for event in fakes.event_log.append(account_id, entries)]


def get(client: Any, headers: dict[str, str], query: str = "") -> Any:
    return client.http.get(f"/events{query}", headers=headers)


def test_paging_by_two_with_next_returns_every_event_once_in_order_while_more_are_logged() -> None:
    fakes = Fakes()
    ids = log_events(fakes, "acme", 5)
    seen: list[str] = []
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        answer = get(client, headers, "?limit=2")
        for _ in range(10):
            assert answer.status_code == 200, answer.body
            page = answer.json_body
            assert len(page["events"]) <= 2
            seen.extend(event["id"] for event in page["events"])
            if not page["events"]:
                break
            if len(seen) == 4:
                # Logged while the client pages: the cursor picks them up after the others.
                ids += log_events(fakes, "acme", 2, first=6)
            answer = get(client, headers, f"?limit=2&after={page['next']}")
    assert seen == ids
    assert len(ids) == 7
    assert page["next"] == ids[-1]  # the last page is empty and hands back its own cursor


def test_an_event_is_sent_as_logged_with_its_id() -> None:
    fakes = Fakes()
    [event_id] = log_events(fakes, "acme", 1)
    with app_client(fakes) as client:
        page = get(client, bearer(fakes, "acme")).json_body
    assert page == {
        "events": [{"id": event_id, "type": "created", "time": "2026-12-02T09:30:00.000Z", "n": 1}],
        "next": event_id,
    }


def test_next_is_the_last_events_id_or_the_cursor_asked_with_or_the_start() -> None:
    fakes = Fakes()
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        # No events, no cursor: the start, which later returns the first event.
        assert get(client, headers).json_body == {"events": [], "next": START}
        assert get(client, headers, f"?after={START}").json_body == {"events": [], "next": START}
        ids = log_events(fakes, "acme", 3)
        assert [e["id"] for e in get(client, headers, f"?after={START}").json_body["events"]] == ids
        assert get(client, headers, "?limit=1").json_body["next"] == ids[0]
        # Nothing after the latest event: the cursor itself comes back.
        assert get(client, headers, f"?after={ids[-1]}").json_body == {"events": [], "next": ids[-1]}
        assert get(client, headers, f"?after={ids[0]}&limit=500").json_body["next"] == ids[-1]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=ten", "limit"),
        ("?limit=1&limit=2", "limit"),
        ("?after=nope", "after"),
        ("?after=1", "after"),  # an id has all its 20 digits
        (f"?after={'0' * 19}x", "after"),
        (f"?after={START}&after={START}", "after"),
        (f"?after={event_id_of(3)}", "after"),  # past the account's latest event (2)
        ("?colour=red", "colour"),
    ],
)
def test_a_bad_query_is_422_naming_the_parameter(query: str, field: str) -> None:
    fakes = Fakes()
    log_events(fakes, "acme", 2)
    with app_client(fakes) as client:
        answer = get(client, bearer(fakes, "acme"), query)
    assert answer.status_code == 422, answer.body
    assert [error["field"] for error in answer.json_body["errors"]] == [field]
    assert field in answer.json_body["message"]


def test_the_limit_defaults_to_100_and_goes_up_to_500() -> None:
    fakes = Fakes()
    log_events(fakes, "acme", 501)
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        assert len(get(client, headers).json_body["events"]) == event_query.DEFAULT_EVENTS_PAGE == 100
        assert len(get(client, headers, "?limit=500").json_body["events"]) == event_query.MAX_EVENTS_PAGE


def test_an_account_sees_its_own_events_only_and_a_cursor_of_another_account_is_no_key_to_theirs() -> None:
    fakes = Fakes()
    theirs = log_events(fakes, "other", 4)
    mine = log_events(fakes, "acme", 1)
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        assert [e["id"] for e in get(client, headers).json_body["events"]] == mine
        assert all(e["n"] == 1 for e in get(client, headers).json_body["events"])
        # Their cursor past my latest event: unknown to me, not a way into their log.
        answer = get(client, headers, f"?after={theirs[2]}")
    assert answer.status_code == 422
    assert answer.json_body["errors"][0]["field"] == "after"


def test_without_a_key_the_gateway_answers_401_before_the_route() -> None:
    fakes = Fakes()
    log_events(fakes, "acme", 1)
    with app_client(fakes) as client:
        answer = client.http.get("/events")
    assert answer.status_code == 401
    assert "events" not in answer.json_body


def test_a_request_the_authorizer_named_no_account_for_is_401() -> None:
    event = {
        "headers": {},
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "requestContext": {"httpMethod": "GET", "resourcePath": "/events"},  # no "authorizer"
        "body": None,
        "stageVariables": None,
    }
    answer = event_query.list_events(Request(event), Fakes().dependencies())
    assert answer.status_code == 401
    assert answer.body == NO_ACCOUNT_BODY


def test_an_unreadable_log_is_503_not_500() -> None:
    fakes = Fakes()
    failing = FailingEventLog()
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        fakes.event_log = failing  # type: ignore[assignment]
        answer = get(client, headers)
    assert answer.status_code == 503
    assert answer.json_body == event_query.UNAVAILABLE_BODY
    assert failing.pages == 1


class FailingEventLog:
    def __init__(self) -> None:
        self.pages = 0

    def page(self, account_id: str, after: int, limit: int) -> list[Any]:
        self.pages += 1
        raise StorageUnavailable("down")

    def head(self, account_id: str) -> int:
        raise StorageUnavailable("down")


def test_parse_events_query_reads_text_values_and_names_every_problem() -> None:
    assert event_query.parse_events_query(None) == event_query.EventsQuery(limit=100, after=None)
    parsed = event_query.parse_events_query({"limit": ["7"], "after": [event_id_of(42)]})
    assert parsed == event_query.EventsQuery(limit=7, after=42)
    with pytest.raises(InvalidQuery) as caught:
        event_query.parse_events_query({"limit": ["0"], "after": ["x"]})
    assert sorted(error.field for error in caught.value.errors) == ["after", "limit"]
    assert event_query.AFTER_PROBLEM in [error.message for error in caught.value.errors]


def documented(component: str) -> OAS30Validator:
    schema = {"$ref": f"#/components/schemas/{component}", "components": openapi_document()["components"]}
    return OAS30Validator(schema)


def test_the_answers_conform_to_the_documented_schemas() -> None:
    fakes = Fakes()
    at = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    order = Order.create("acme", OrderTerms(OrderType.LIMIT, Side.BUY, "US0378331005", 10, Decimal("187.25")), at)
    report = ExecutionReport(
        "E-1", order.id, "X-1", ExecType.FILL, 10, Decimal("187.25"), 10, 0, Decimal("187.25"), at, 1
    )
    filled = Order(**{**order.__dict__, "status": OrderStatus.FILLED, "filled_quantity": 10})
    events = [
        OrderEvent(OrderEventType.CREATED, at, order, None, f"{order.id}#1#0"),
        OrderEvent(OrderEventType.FILL, at, filled, report, f"{order.id}#2#0"),
    ]
    entries = [NewLogEntry(e.change_key, order.id, e.type.value, event_body(e)) for e in events]
    fakes.event_log.append("acme", entries)
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        page, empty = get(client, headers).json_body, get(client, headers, f"?after={event_id_of(2)}").json_body
        invalid = get(client, headers, "?limit=0&after=x").json_body
    assert [event["type"] for event in page["events"]] == ["created", "fill"]
    assert page["events"][1]["execution"]["quantity"] == 10
    assert not list(documented("OrderEventPage").iter_errors(page))
    assert not list(documented("OrderEventPage").iter_errors(empty))
    assert not list(documented("ValidationErrorResponse").iter_errors(invalid))
    assert not documented("OrderEventPage").is_valid({"events": []})  # next is always there
