"""The reconciler benchmark's DynamoDB arithmetic: item sizes, capacity units, and the meter on a stubbed client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from botocore.stub import Stubber

from bench.reconcile import (
    CapacityMeter,
    exchange_floor_s,
    item_size,
    number_size,
    read_units,
    update_index_write_units,
    write_units,
)

ORDER_KEY = {"id": {"S": "0f8fad5b-d9cb-469f-a165-70867728950e"}}  # 2 + 36 bytes
INDEX_ENTRY = {**ORDER_KEY, "reconcile_shard": {"N": "3"}}  # 38 + 15 + 2 bytes


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 2), ("7", 2), ("12345", 4), ("100", 2), ("-1.50", 2), ("0.0005", 2), ("123456", 4), ("1E+3", 2)],
)
def test_a_number_takes_a_byte_per_two_significant_digits_plus_one(text: str, size: int) -> None:
    assert number_size(text) == size


def test_an_item_counts_its_attribute_names_and_values() -> None:
    assert item_size(ORDER_KEY) == 38
    assert item_size(INDEX_ENTRY) == 55
    # A map: 3 bytes, then per entry 1 byte, its name and its value; a list likewise without names.
    nested: dict[str, Any] = {
        "m": {"M": {"ab": {"S": "xyz"}, "n": {"BOOL": True}}},
        "l": {"L": [{"S": "a"}, {"NULL": True}]},
    }
    assert item_size(nested) == (1 + 3 + (1 + 2 + 3) + (1 + 1 + 1)) + (1 + 3 + (1 + 1) + (1 + 1))
    assert item_size({"s": {"SS": ["ab", "c"]}, "b": {"B": b"\x00\x01"}}) == (1 + 3) + (1 + 2)


def test_an_unknown_attribute_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown DynamoDB attribute type 'X'"):
        item_size({"a": {"X": "1"}})


def test_reads_are_charged_per_4kb_begun_and_half_when_eventually_consistent() -> None:
    assert read_units(0, consistent=True) == 1.0  # a missing item is read all the same
    assert read_units(4096, consistent=True) == 1.0
    assert read_units(4097, consistent=True) == 2.0
    assert read_units(12_000, consistent=False) == 1.5


def test_writes_are_charged_per_1kb_begun() -> None:
    assert write_units(1) == 1
    assert write_units(1024) == 1
    assert write_units(1025) == 2


def test_an_update_rewrites_the_account_index_copy_and_a_done_order_leaves_the_reconcile_index() -> None:
    still_open = {**INDEX_ENTRY, "status": {"S": "partially_filled"}}
    done = {**ORDER_KEY, "status": {"S": "filled"}}

    assert update_index_write_units(still_open) == 1
    assert update_index_write_units(done) == 2


def test_the_exchange_floor_is_one_round_trip_per_eight_orders() -> None:
    assert exchange_floor_s(0) == 0
    assert exchange_floor_s(8) == pytest.approx(0.05)
    assert exchange_floor_s(200) == pytest.approx(1.25)
    assert exchange_floor_s(201) == pytest.approx(1.30)


@pytest.fixture
def dynamodb() -> Iterator[tuple[object, Stubber, CapacityMeter]]:
    client = botocore.session.get_session().create_client(
        "dynamodb", region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench"
    )
    meter = CapacityMeter()
    meter.attach(client)
    with Stubber(client) as stubber:
        yield client, stubber, meter


def test_the_meter_estimates_the_units_of_a_reconcile_runs_calls(dynamodb) -> None:
    client, stubber, meter = dynamodb
    order = {**INDEX_ENTRY, "status": {"S": "placed"}, "padding": {"S": "x" * 5000}}  # two 4 KB blocks
    stubber.add_response("get_item", {})
    stubber.add_response("query", {"Items": [INDEX_ENTRY] * 100, "Count": 100, "ScannedCount": 100})
    stubber.add_response("batch_get_item", {"Responses": {"orders": [order, INDEX_ENTRY]}})
    stubber.add_response("update_item", {"Attributes": {**ORDER_KEY, "status": {"S": "filled"}}})
    stubber.add_response("put_item", {})

    client.get_item(TableName="checkpoints", Key={"feed_id": {"S": "reconciler:orders"}}, ConsistentRead=True)
    client.query(TableName="orders", IndexName="reconcile-orders", KeyConditionExpression="reconcile_shard = :s")
    keys = {"Keys": [ORDER_KEY], "ConsistentRead": True}
    client.batch_get_item(RequestItems={"orders": keys})
    client.update_item(TableName="orders", Key=ORDER_KEY)
    client.put_item(TableName="checkpoints", Item={"feed_id": {"S": "reconciler:orders"}, "position": {"S": "0:"}})

    # GetItem 1 (consistent, missing); Query 5,500 bytes -> two 4 KB blocks at half; BatchGetItem 2 + 1.
    assert meter.read == pytest.approx(1 + 1 + 3)
    assert (meter.index_items, meter.orders_read) == (100, 2)
    assert meter.order_bytes == item_size(order) + item_size(INDEX_ENTRY)
    # UpdateItem: the table, the account index's copy, the reconcile index's entry deleted; PutItem: 1.
    assert meter.written == 3 + 1
    meter.reset()
    assert (meter.read, meter.written, meter.index_items, meter.orders_read, meter.order_bytes) == (0, 0, 0, 0, 0)
