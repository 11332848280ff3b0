"""Time in force, expiry, stop orders and the ISIN check digit at the API's edge: every rule a 422 naming its field,
the terms parsed exactly, the echo in every order JSON (and event), and POST /orders in process with fakes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator

from chalicelib.domain.model import Order, OrderTerms, OrderType, Side, TimeInForce
from chalicelib.domain.order_events import OrderEvent, OrderEventType
from chalicelib.entrypoints.event_models import event_body
from chalicelib.entrypoints.openapi import openapi_document
from chalicelib.entrypoints.request_models import InvalidOrder, OrderLimits, parse_order_request
from chalicelib.entrypoints.response_models import order_to_json
from tests.unit.fakes import FakeReferencePrices, Fakes
from tests.unit.helpers import Clock
from tests.unit.in_process import app_client, bearer

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
APPLE = "US0378331005"
TOMORROW = "2026-12-03T15:00:00Z"


def body(**changes: Any) -> dict[str, Any]:
    order: dict[str, Any] = {"type": "limit", "side": "buy", "instrument": APPLE, "quantity": 10, "limit_price": 100}
    order.update(changes)
    return {name: value for name, value in order.items() if value is not ...}  # ... = leave the field out


def parsed(order: dict[str, Any], limits: OrderLimits | None = None) -> OrderTerms:
    return parse_order_request(json.dumps(order), limits)


def refused(order: dict[str, Any] | str, limits: OrderLimits | None = None) -> dict[str, str]:
    raw = order if isinstance(order, str) else json.dumps(order)
    with pytest.raises(InvalidOrder) as caught:
        parse_order_request(raw, limits)
    return {error.field: error.message for error in caught.value.errors}


# --- valid terms, parsed exactly


def test_without_the_new_fields_an_order_is_a_day_order_as_before() -> None:
    terms = parsed(body())
    assert (terms.time_in_force, terms.expires_at, terms.stop_price) == (TimeInForce.DAY, None, None)


@pytest.mark.parametrize("time_in_force", ["day", "gtc", "ioc", "fok"])
def test_each_time_in_force_without_expiry_is_taken(time_in_force: str) -> None:
    assert parsed(body(time_in_force=time_in_force)).time_in_force == TimeInForce(time_in_force)


def test_a_gtd_order_has_its_expiry_in_utc_as_sent_and_the_order_keeps_it_to_the_second() -> None:
    terms = parsed(body(time_in_force="gtd", expires_at="2026-12-03T16:00:00.999+01:00"))
    assert terms.time_in_force is TimeInForce.GTD
    # The fraction still counts for "in the future" (the create's check); the order keeps whole seconds.
    assert terms.expires_at == datetime(2026, 12, 3, 15, 0, 0, 999000, tzinfo=UTC)
    assert terms.expires_at.utcoffset() == timedelta(0)
    assert terms.to_the_second().expires_at == datetime(2026, 12, 3, 15, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text", ["2026-12-03T15:00:00Z", "2026-12-03T15:00:00.5Z", "2026-12-03T16:00:00+01:00", "2026-12-03T10:00:00-05:00"]
)
def test_rfc_3339_date_times_are_taken(text: str) -> None:
    assert parsed(body(time_in_force="gtd", expires_at=text)).expires_at is not None


def test_a_stop_order_has_a_stop_price_on_the_tick_and_no_limit_price() -> None:
    terms = parsed(body(type="stop", limit_price=..., stop_price=101.5, time_in_force="gtc"))
    assert terms.type is OrderType.STOP
    assert terms.limit_price is None
    assert terms.stop_price == Decimal("101.50")
    assert str(terms.stop_price) == "101.50"  # stored and compared at the tick, as limit_price is


def test_a_stop_limit_order_has_both_prices() -> None:
    terms = parsed(body(type="stop_limit", stop_price=99, limit_price=98.75))
    assert (terms.type, terms.stop_price, terms.limit_price) == (OrderType.STOP_LIMIT, Decimal("99"), Decimal("98.75"))


@pytest.mark.parametrize(
    "isin",
    ["US0378331005", "DE0007164600", "GB0002634946", "US88160R1014", "NL0010273215", "XS2021832634", "AU0000XVGZA3"],
)
def test_valid_isins_are_taken(isin: str) -> None:
    assert parsed(body(instrument=isin)).instrument == isin


# --- every rule: a 422 naming the field and what is wrong


@pytest.mark.parametrize(
    ("order", "field", "message"),
    [
        (
            body(instrument="US0378331006"),
            "instrument",
            "instrument US0378331006 is not a valid ISIN: its check digit (the last character) is wrong",
        ),
        (
            body(instrument="DE0007164601"),
            "instrument",
            "instrument DE0007164601 is not a valid ISIN: its check digit (the last character) is wrong",
        ),
        (
            body(instrument="ZZ0378331005"),
            "instrument",
            "instrument ZZ0378331005 is not a valid ISIN: ZZ is no ISIN country code",
        ),
        (body(time_in_force="gtd"), "expires_at", "expires_at is required for time_in_force gtd"),
        (body(time_in_force="gtd", expires_at=None), "expires_at", "expires_at is required for time_in_force gtd"),
        (body(expires_at=TOMORROW), "expires_at", "expires_at must be absent or null for time_in_force day"),
        (
            body(time_in_force="gtc", expires_at=TOMORROW),
            "expires_at",
            "expires_at must be absent or null for time_in_force gtc",
        ),
        (body(time_in_force="gtd", expires_at="2026-12-03T15:00:00"), "expires_at", "must include a UTC offset"),
        (body(time_in_force="gtd", expires_at="2026-12-03"), "expires_at", "must include a UTC offset"),
        (body(time_in_force="gtd", expires_at="tomorrow"), "expires_at", "must be an ISO 8601 date-time"),
        (body(time_in_force="gtd", expires_at=1796310000), "expires_at", "must be a string"),
        # What pydantic's lax parsing would take: a Unix time as text, a space for the T, lower case, no
        # seconds, an offset without its colon; and digits of another script.
        *(
            (body(time_in_force="gtd", expires_at=text), "expires_at", "as RFC 3339 writes it")
            for text in (
                "1796310000",
                "2026-12-03 15:00:00Z",
                "2026-12-03t15:00:00z",
                "2026-12-03T15:00:00z",
                "2026-12-03T15:00Z",
                "2026-12-03T15:00:00+0100",
                "2026-12-03T15:00:00+01",
                "2026-12-03T15:00:00Z\n",
                "\uff12026-12-03T15:00:00Z",
            )
        ),
        (body(time_in_force="gtd", expires_at="9999-12-31T23:59:59-23:59"), "expires_at", "out of range"),
        (body(time_in_force="GTC"), "time_in_force", "must be one of 'day', 'gtc', 'ioc', 'fok' or 'gtd'"),
        (body(time_in_force=None), "time_in_force", "must be one of"),
        (body(type="stop", limit_price=...), "stop_price", "stop_price is required for type stop"),
        (body(type="stop", limit_price=..., stop_price=None), "stop_price", "stop_price is required for type stop"),
        (body(type="stop_limit"), "stop_price", "stop_price is required for type stop_limit"),
        (
            body(type="stop", stop_price=101),
            "limit_price",
            "limit_price must be absent or null for type stop",
        ),
        (
            body(type="stop_limit", limit_price=..., stop_price=101),
            "limit_price",
            "limit_price is required for type stop_limit",
        ),
        (body(stop_price=101), "stop_price", "stop_price must be absent or null for type limit"),
        (
            body(type="market", limit_price=..., stop_price=101),
            "stop_price",
            "stop_price must be absent or null for type market",
        ),
        (
            body(type="stop", limit_price=..., stop_price=101, time_in_force="ioc"),
            "time_in_force",
            "time_in_force ioc cannot be used with type stop",
        ),
        (
            body(type="stop_limit", stop_price=101, time_in_force="fok"),
            "time_in_force",
            "time_in_force fok cannot be used with type stop_limit",
        ),
        (body(type="stop", limit_price=..., stop_price=0), "stop_price", "stop_price must be greater than 0"),
        (body(type="stop", limit_price=..., stop_price=-1), "stop_price", "stop_price must be greater than 0"),
        (
            body(type="stop", limit_price=..., stop_price=101.005),
            "stop_price",
            "stop_price must have at most 2 decimal places",
        ),
        (body(type="stop", limit_price=..., stop_price="101"), "stop_price", "stop_price must be a JSON number"),
        (body(type="stop", limit_price=..., stop_price=True), "stop_price", "stop_price must be a JSON number"),
        (body(type="stop", limit_price=..., stop_price=10**10), "stop_price", "stop_price must be at most 1000000000"),
        (body(type="trailing_stop"), "type", "must be one of 'market', 'limit', 'stop' or 'stop_limit'"),
    ],
)
def test_each_rule_is_a_422_naming_the_field(order: dict[str, Any], field: str, message: str) -> None:
    assert message in refused(order)[field]


def test_a_stop_price_written_in_more_than_32_characters_is_refused_before_it_is_read() -> None:
    raw = json.dumps(body(type="stop", limit_price=..., stop_price=1)).replace(
        '"stop_price": 1', '"stop_price": 1.' + "0" * 40
    )
    assert "at most 32 characters" in refused(raw)["stop_price"]


def test_the_stop_price_is_held_to_the_limit_price_bound_set_by_the_operator() -> None:
    errors = refused(body(type="stop", limit_price=..., stop_price=50.01), OrderLimits(max_limit_price=Decimal(50)))
    assert errors == {"stop_price": "stop_price must be at most 50 (price sanity bound)"}


@pytest.mark.parametrize(
    ("order", "only"),
    [
        # Also too far ahead, and over the price bound: beside the point for a field that does not belong.
        (
            body(time_in_force="gtc", expires_at="2099-01-01T15:00:00Z"),
            "expires_at must be absent or null for time_in_force gtc",
        ),
        (body(stop_price=1000), "stop_price must be absent or null for type limit"),
    ],
)
def test_a_field_that_does_not_belong_is_told_only_that(order: dict[str, Any], only: str) -> None:
    field = only.split(maxsplit=1)[0]
    with pytest.raises(InvalidOrder) as caught:
        parse_order_request(json.dumps(order), OrderLimits(max_limit_price=Decimal(200)))
    assert [(error.field, error.message) for error in caught.value.errors] == [(field, only)]


def test_every_problem_of_one_body_is_named_at_once() -> None:
    errors = refused(
        body(type="stop", stop_price=0, time_in_force="ioc", expires_at=TOMORROW, instrument="US0378331006")
    )
    assert set(errors) == {"limit_price", "stop_price", "time_in_force", "expires_at", "instrument"}


# --- the echo: every order JSON, events too, and the documented schema


def stop_limit_gtd() -> Order:
    terms = OrderTerms(
        OrderType.STOP_LIMIT,
        Side.SELL,
        APPLE,
        5,
        Decimal("98.00"),
        "k-2",
        time_in_force=TimeInForce.GTD,
        expires_at=datetime(2026, 12, 3, 15, 0, tzinfo=UTC),
        stop_price=Decimal("99.50"),
    )
    return Order.create("acct-1", terms, NOW)


def test_the_order_json_echoes_the_terms() -> None:
    echoed = order_to_json(stop_limit_gtd())
    assert (echoed["type"], echoed["time_in_force"]) == ("stop_limit", "gtd")
    assert echoed["expires_at"] == "2026-12-03T15:00:00.000Z"
    assert echoed["stop_price"] == 99.5 and isinstance(echoed["stop_price"], float)
    assert echoed["limit_price"] == 98.0


def test_an_order_from_before_echoes_day_and_nulls() -> None:
    old = Order.create("acct-1", OrderTerms(OrderType.MARKET, Side.BUY, APPLE, 1, None), NOW)
    echoed = order_to_json(old)
    assert (echoed["time_in_force"], echoed["expires_at"], echoed["stop_price"]) == ("day", None, None)


def test_events_show_the_order_with_its_terms() -> None:
    order = stop_limit_gtd()
    event = OrderEvent(type=OrderEventType.CREATED, time=NOW, order=order, execution=None, change_key="c-1")
    shown = event_body(event)
    assert shown["order"] == order_to_json(order)
    assert shown["order"]["stop_price"] == 99.5


def validator(component: str) -> OAS30Validator:
    document = openapi_document()
    return OAS30Validator({"$ref": f"#/components/schemas/{component}", "components": document["components"]})


def test_the_documented_schemas_describe_the_new_fields() -> None:
    request = openapi_document()["components"]["schemas"]["OrderRequest"]
    assert {"time_in_force", "expires_at", "stop_price"} <= set(request["properties"])
    assert validator("OrderRequest").is_valid(
        body(type="stop_limit", stop_price=99, time_in_force="gtd", expires_at=TOMORROW)
    )
    assert not validator("OrderRequest").is_valid(body(time_in_force="GTD"))
    assert not validator("OrderRequest").is_valid(body(instrument="us0378331005"))
    assert not list(validator("OrderResponse").iter_errors(order_to_json(stop_limit_gtd())))


# --- POST /orders in process: the clock of the dependencies, the echo, idempotency, the stop order's valuation


def post(fakes: Fakes, order: dict[str, Any]) -> Any:
    with app_client(fakes) as client:
        return client.http.post("/orders", headers=bearer(fakes, "acme"), body=json.dumps(order))


def test_a_gtd_stop_limit_order_is_created_and_echoed() -> None:
    fakes = Fakes(clock=lambda: NOW)
    order = body(type="stop_limit", stop_price=99.5, time_in_force="gtd", expires_at=TOMORROW, client_order_id="g-1")
    answer = post(fakes, order)
    assert answer.status_code == 201, answer.json_body
    assert {k: answer.json_body[k] for k in ("type", "time_in_force", "expires_at", "stop_price", "limit_price")} == {
        "type": "stop_limit",
        "time_in_force": "gtd",
        "expires_at": "2026-12-03T15:00:00.000Z",
        "stop_price": 99.5,
        "limit_price": 100.0,
    }
    (stored,) = fakes.orders.orders.values()
    assert stored.terms.stop_price == Decimal("99.50")
    assert post(fakes, order).status_code == 200  # the same terms again: the same order


def test_the_expiry_is_checked_against_the_dependencies_clock() -> None:
    later = Fakes(clock=lambda: datetime(2026, 12, 4, tzinfo=UTC))
    answer = post(later, body(time_in_force="gtd", expires_at=TOMORROW))
    assert answer.status_code == 422
    assert answer.json_body["errors"] == [{"field": "expires_at", "message": "expires_at must be in the future"}]
    assert later.orders.orders == {}


@pytest.mark.parametrize(
    ("expires_at", "message"),
    [
        (NOW.isoformat(), "expires_at must be in the future"),
        ("2026-12-01T15:00:00Z", "expires_at must be in the future"),
        ((NOW + timedelta(days=90, seconds=1)).isoformat(), "expires_at must be at most 90 days ahead"),
    ],
)
def test_an_expiry_past_or_too_far_ahead_is_a_422_naming_expires_at(expires_at: str, message: str) -> None:
    fakes = Fakes(clock=lambda: NOW)
    answer = post(fakes, body(time_in_force="gtd", expires_at=expires_at, client_order_id="x-1"))
    assert answer.status_code == 422
    assert answer.json_body == {
        "message": f"Invalid order: {message}",
        "errors": [{"field": "expires_at", "message": message}],
    }
    assert fakes.orders.orders == {}


def test_an_expiry_exactly_90_days_ahead_is_taken() -> None:
    ninety = (NOW + timedelta(days=90)).isoformat()
    answer = post(Fakes(clock=lambda: NOW), body(time_in_force="gtd", expires_at=ninety))
    assert answer.status_code == 201, answer.json_body
    assert answer.json_body["expires_at"] == "2027-03-02T09:30:00.000Z"


def test_a_retried_gtd_order_gets_its_order_back_after_its_expiry_has_passed() -> None:
    clock = Clock(datetime(2026, 12, 2, 9, 30, tzinfo=UTC))
    fakes = Fakes(clock=clock)
    order = body(time_in_force="gtd", expires_at="2026-12-02T09:31:00Z", client_order_id="late-retry")
    created = post(fakes, order)
    assert created.status_code == 201, created.json_body
    clock.now = datetime(2026, 12, 2, 9, 32, tzinfo=UTC)
    replayed = post(fakes, order)
    assert replayed.status_code == 200, replayed.json_body  # as any replay: the stored order, not a 422
    assert replayed.json_body == created.json_body
    # A new order (another key) with that expiry is refused: the clock still decides for it.
    refused_new = post(fakes, {**order, "client_order_id": "new-one"})
    assert refused_new.status_code == 422
    assert refused_new.json_body["errors"] == [{"field": "expires_at", "message": "expires_at must be in the future"}]
    no_key = post(fakes, {name: value for name, value in order.items() if name != "client_order_id"})
    assert no_key.status_code == 422
    assert len(fakes.orders.orders) == 1


def test_an_expiry_later_within_the_current_second_is_in_the_future_and_kept_to_the_second() -> None:
    sent = body(time_in_force="gtd", expires_at="2026-12-02T09:30:00.500Z", client_order_id="soon")
    fakes = Fakes(clock=lambda: datetime(2026, 12, 2, 9, 30, 0, 100000, tzinfo=UTC))
    answer = post(fakes, sent)
    assert answer.status_code == 201, answer.json_body
    assert answer.json_body["expires_at"] == "2026-12-02T09:30:00.000Z"
    (stored,) = fakes.orders.orders.values()
    assert stored.terms.expires_at == datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    assert post(fakes, sent).status_code == 200  # its replay: the terms the order keeps are the same
    too_late = Fakes(clock=lambda: datetime(2026, 12, 2, 9, 30, 0, 600000, tzinfo=UTC))
    assert post(too_late, sent).status_code == 422


@pytest.mark.parametrize(
    "changes",
    [
        {"time_in_force": "gtc"},
        {"time_in_force": "gtd", "expires_at": TOMORROW},
        {"type": "stop_limit", "stop_price": 99},
    ],
)
def test_a_repeated_client_order_id_with_other_terms_is_409(changes: dict[str, Any]) -> None:
    fakes = Fakes(clock=lambda: NOW)
    assert post(fakes, body(client_order_id="same")).status_code == 201
    answer = post(fakes, body(client_order_id="same", **changes))
    assert answer.status_code == 409
    assert len(fakes.orders.orders) == 1


def test_an_invalid_isin_is_a_422_saying_so_and_nothing_is_stored() -> None:
    fakes = Fakes(clock=lambda: NOW)
    answer = post(fakes, body(instrument="US0378331006"))
    assert answer.status_code == 422
    assert answer.json_body["errors"] == [
        {
            "field": "instrument",
            "message": "instrument US0378331006 is not a valid ISIN: its check digit (the last character) is wrong",
        }
    ]
    assert fakes.orders.orders == {}


def test_a_stop_order_is_valued_with_the_reference_price() -> None:
    prices = FakeReferencePrices(default=Decimal("80"))
    fakes = Fakes(clock=lambda: NOW, reference_prices=prices)
    assert post(fakes, body(type="stop", limit_price=..., stop_price=90)).status_code == 201
    assert prices.asked == [APPLE]
    unpriced = Fakes(clock=lambda: NOW, reference_prices=FakeReferencePrices(default=None))
    answer = post(unpriced, body(type="stop", limit_price=..., stop_price=90))
    assert answer.status_code == 503  # fail closed, as a market order does
    assert "stop order" in answer.json_body["message"]
