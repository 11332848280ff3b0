"""Our patch of moto's COUNT Query (devstack/moto_count_queries.py): the same answers, without copying what it counts.

In-process moto (mock_aws): each Query runs once with moto as it is and once
patched, on the same table; the patch is taken off again after each test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import moto.dynamodb.models.table as table_module
import pytest
from moto.dynamodb.models.dynamo_type import Item
from moto.dynamodb.models.table import SecondaryIndex
from moto.dynamodb.responses import DynamoHandler

from devstack.moto_count_queries import count_queries_without_copies
from tests.tooling.moto_in_process import in_process_moto

pytestmark = pytest.mark.unit

TABLE = "orders"
INDEX = "account-open-orders"


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    """A table shaped like the orders table's open-orders index (sparse, keys only), 3 accounts' orders in it."""
    with in_process_moto():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "id", "AttributeType": "S"},
                {"AttributeName": "open_account_id", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": INDEX,
                    "KeySchema": [
                        {"AttributeName": "open_account_id", "KeyType": "HASH"},
                        {"AttributeName": "id", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            ],
        )
        for number in range(90):
            item = {"id": {"S": f"o{number:03}"}, "status": {"S": "placed" if number % 3 else "filled"}}
            if number % 3:  # a third are done: out of the sparse index
                item["open_account_id"] = {"S": f"a{number % 2}"}
            client.put_item(TableName=TABLE, Item=item)
        yield client


@pytest.fixture
def patched() -> Iterator[None]:
    saved = (DynamoHandler.query, SecondaryIndex.project, table_module.copy)
    count_queries_without_copies()
    try:
        yield
    finally:
        DynamoHandler.query, SecondaryIndex.project, table_module.copy = saved  # type: ignore[method-assign]


def pages(dynamodb: Any, **query: Any) -> list[dict[str, Any]]:
    """Every page of a Query, without the response metadata."""
    answers, start = [], None
    while True:
        extra = {"ExclusiveStartKey": start} if start else {}
        page = dynamodb.query(TableName=TABLE, **query, **extra)
        page.pop("ResponseMetadata")
        answers.append(page)
        start = page.get("LastEvaluatedKey")
        if not start:
            return answers


QUERIES = [
    {"IndexName": INDEX, "Select": "COUNT"},
    {"IndexName": INDEX, "Select": "COUNT", "Limit": 7},
    {"IndexName": INDEX, "Select": "COUNT", "Limit": 7, "ScanIndexForward": False},
    {"IndexName": INDEX, "Select": "COUNT", "FilterExpression": "id > :low", "Limit": 5},
    {"IndexName": INDEX},
]


@pytest.mark.parametrize("query", QUERIES, ids=lambda query: ",".join(f"{k}={v}" for k, v in query.items()))
def test_every_page_of_a_query_is_what_moto_answers(dynamodb: Any, query: dict[str, Any], request: Any) -> None:
    condition = {"KeyConditionExpression": "open_account_id = :account"}
    values = {":account": {"S": "a1"}} | ({":low": {"S": "o040"}} if "FilterExpression" in query else {})
    arguments = query | condition | {"ExpressionAttributeValues": values}
    before = pages(dynamodb, **arguments)
    request.getfixturevalue("patched")
    assert pages(dynamodb, **arguments) == before
    assert sum(page["Count"] for page in before) > 0


def test_a_count_copies_no_item(dynamodb: Any, patched: None, monkeypatch: pytest.MonkeyPatch) -> None:
    copies: list[Any] = []
    original = Item.__deepcopy__

    def counted(self: Item, memo: dict[int, Any]) -> Any:
        copies.append(self)
        return original(self, memo)

    monkeypatch.setattr(Item, "__deepcopy__", counted)
    condition = {
        "KeyConditionExpression": "open_account_id = :account",
        "ExpressionAttributeValues": {":account": {"S": "a0"}},
    }
    counted_orders = dynamodb.query(TableName=TABLE, IndexName=INDEX, Select="COUNT", **condition)["Count"]
    assert (counted_orders, copies) == (30, [])
    # Items asked for are copied as before.
    assert len(dynamodb.query(TableName=TABLE, IndexName=INDEX, **condition)["Items"]) == 30
    assert len(copies) == 30
