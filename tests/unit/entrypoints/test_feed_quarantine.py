"""Implausible execution reports through the Kinesis consumer: quarantined with the reason, never applied nor stored.

And what a stored value beyond any JSON number (rows from before these checks) looks like in the API: null, never
Infinity.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.domain.model import ExecType, ExecutionReport, Order, OrderStatus
from chalicelib.entrypoints.feed_message import parse_execution_report
from chalicelib.service.executions import apply_execution_reports
from tests.unit.fakes import SWEEP, Fakes
from tests.unit.helpers import T0, limit_terms
from tests.unit.in_process import app_client, bearer, kinesis_event

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

EXCHANGE_ORDER_ID = "X-recorded"


def placed_order(fakes: Fakes) -> Order:
    """A buy limit order for 10 at 99.5, accepted by the exchange as X-recorded."""
    order = fakes.orders.add(Order.create("acme", limit_terms(quantity=10), T0), T0 + SWEEP)
    return fakes.orders.update(order.placed(EXCHANGE_ORDER_ID, T0), None)


def message(order: Order, seq: int, **changes: Any) -> dict[str, Any]:
    """The feed's message of a partial fill of 4 at 99.00, with changes."""
    body: dict[str, Any] = {
        "seq": seq,
        "exec_id": f"E{seq}",
        "client_order_id": order.id,
        "exchange_order_id": EXCHANGE_ORDER_ID,
        "exec_type": "partial_fill",
        "last_qty": 4,
        "last_price": "99.00",
        "cum_qty": 4,
        "leaves_qty": 6,
        "avg_price": "99.00",
        "transact_time": datetime(2026, 11, 23, 14, 31, seq, tzinfo=UTC).isoformat(),
    }
    return {**body, **changes}


def strict_json(text: str) -> Any:
    """json.loads refusing NaN, Infinity and -Infinity, which json.dumps writes but are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_implausible_reports_are_quarantined_with_their_reason_and_the_plausible_ones_apply(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fakes = Fakes()
    order = placed_order(fakes)
    payloads = [
        message(order, 1),
        message(order, 2, exchange_order_id="X-foreign"),
        message(order, 3, exec_type="fill", last_qty=8, cum_qty=12, leaves_qty=0, last_price="99.00"),
        message(order, 4, last_price="120.00", avg_price="105.00", last_qty=2, cum_qty=6, leaves_qty=4),
    ]
    raw = [json.dumps(p).encode() for p in payloads]
    # Huge exponents, as a string and as a JSON number: malformed, not merely implausible.
    raw.append(json.dumps(message(order, 5, avg_price="1e400")).encode())
    raw.append(json.dumps(message(order, 6)).replace('"avg_price": "99.00"', '"avg_price": 1e400').encode())
    with app_client(fakes) as client:
        response = client.lambda_.invoke("apply_executions", kinesis_event(client, raw)).payload
    assert response == {"batchItemFailures": []}

    after = fakes.orders.orders[order.id]
    assert (after.status, after.filled_quantity, after.average_fill_price) == (
        OrderStatus.PARTIALLY_FILLED,
        4,
        Decimal("99.00"),
    )
    assert [r.exec_id for r in fakes.executions.list_for_order(order.id)] == ["E1"]
    set_aside = {entry["sequenceNumber"]: entry["reason"] for entry in map(json.loads, fakes.failed_queue.sent)}
    assert set_aside == {
        "1002": "implausible execution report: exchange_order_id 'X-foreign' is not the order's ('X-recorded')",
        "1003": "implausible execution report: cum_qty 12 is above the order's quantity 10",
        "1004": "implausible execution report: last_price 120.00 is above the buy limit 99.5",
        "1005": "malformed execution report: avg_price: Value error, exponent beyond +-30",
        "1006": "malformed execution report: avg_price: Input should be a finite number",
    }
    emitted = capsys.readouterr().out
    assert '"ExecutionReportsQuarantined"' in emitted
    metrics = [json.loads(line) for line in emitted.splitlines() if '"ExecutionReportsQuarantined"' in line]
    assert [m["ExecutionReportsQuarantined"] for m in metrics] == [[5.0]]  # 3 implausible, 2 malformed


def reports(order: Order) -> list[ExecutionReport]:
    plausible = ExecutionReport(
        exec_id="E1",
        order_id=order.id,
        exchange_order_id=EXCHANGE_ORDER_ID,
        exec_type=ExecType.PARTIAL_FILL,
        last_qty=4,
        last_price=Decimal("99.00"),
        cum_qty=4,
        leaves_qty=6,
        avg_price=Decimal("99.00"),
        transact_time=T0,
        seq=1,
    )
    overfill = dataclasses.replace(plausible, exec_id="E2", seq=2, cum_qty=14, last_qty=10, leaves_qty=0)
    return [plausible, overfill]


def test_quarantine_is_the_same_for_any_order_and_repetition_of_the_batch() -> None:
    fakes = Fakes(clock=lambda: T0)
    order = placed_order(fakes)
    plausible, overfill = reports(order)
    first = apply_execution_reports([overfill, plausible, overfill], fakes.dependencies())
    assert (first.updated_orders, list(first.quarantined)) == (1, [overfill])
    after_first = fakes.orders.orders[order.id]
    again = apply_execution_reports([plausible, overfill], fakes.dependencies())
    assert (again.updated_orders, list(again.quarantined)) == (0, [overfill])
    assert fakes.orders.orders[order.id] == after_first
    assert after_first.filled_quantity == 4
    assert list(fakes.executions.stored) == [(order.id, "E1")]


def test_an_order_left_with_only_implausible_reports_is_not_written() -> None:
    fakes = Fakes(clock=lambda: T0)
    order = placed_order(fakes)
    _, overfill = reports(order)
    writes = fakes.orders.writes
    result = apply_execution_reports([overfill], fakes.dependencies())
    assert (result.updated_orders, result.failed_orders, fakes.orders.writes) == (0, {}, writes)
    assert fakes.executions.stored == {}


def test_a_stored_value_beyond_any_json_number_is_answered_as_null_not_infinity() -> None:
    fakes = Fakes()
    order = placed_order(fakes)
    # As the consumer stored it before the checks: a fill report with avg_price 1e400.
    huge = Decimal("1e400")
    fakes.orders.update(dataclasses.replace(order, filled_quantity=10, average_fill_price=huge), None)
    (stored,) = reports(order)[:1]
    fakes.executions.add_many([dataclasses.replace(stored, avg_price=huge, last_price=Decimal("-1e400"))])
    with app_client(fakes) as client:
        headers = bearer(fakes, "acme")
        one = client.http.get(f"/orders/{order.id}", headers=headers)
        listing = client.http.get("/orders", headers=headers)
        executions = client.http.get(f"/orders/{order.id}/executions", headers=headers)
    assert (one.status_code, listing.status_code, executions.status_code) == (200, 200, 200)
    assert strict_json(one.body.decode())["average_fill_price"] is None
    assert [o["average_fill_price"] for o in strict_json(listing.body.decode())["orders"]] == [None]
    (execution,) = strict_json(executions.body.decode())["executions"]
    assert (execution["price"], execution["average_price"]) == (None, None)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"avg_price": "1e400"}, "avg_price: Value error, exponent beyond"),
        ({"last_price": "1e-400"}, "last_price: Value error, exponent beyond"),
        ({"avg_price": "100." + "0" * 16_000}, "avg_price: Value error, more than 30 digits"),
        ({"avg_price": "NaN"}, "avg_price: Input should be a finite number"),
        ({"cum_qty": 10**40}, "cum_qty: Input should be less than or equal to"),
        ({"seq": 2**80}, "seq: Input should be less than or equal to"),
    ],
)
def test_numbers_no_venue_prints_are_malformed_when_read(changes: dict[str, Any], fragment: str) -> None:
    order = Order.create("acme", limit_terms(quantity=10), T0)
    with pytest.raises(ValueError, match="malformed execution report") as raised:
        parse_execution_report(json.dumps({**message(order, 1), **changes}).encode())
    assert fragment in str(raised.value)


def test_a_plausible_price_reads_exactly() -> None:
    order = Order.create("acme", limit_terms(quantity=10), T0)
    report = parse_execution_report(json.dumps(message(order, 1, avg_price="99.12345678")).encode())
    assert report.avg_price == Decimal("99.12345678")
