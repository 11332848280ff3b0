"""Our moto server (devstack/moto_server.py): DynamoDB's conditional writes are atomic, as on AWS."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devstack.emulator import emulator_client, start_moto
from devstack.moto_server import AtomicDynamoDBWrites
from devstack.processes import LOOPBACK, free_port

pytestmark = pytest.mark.integration

RACERS = 24
ROUNDS = 15


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = start_moto(port)
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.stop()


def test_of_many_racing_conditional_puts_for_one_key_exactly_one_succeeds(moto_url: str) -> None:
    dynamodb: Any = emulator_client("dynamodb", moto_url, config=Config(max_pool_connections=RACERS))
    dynamodb.create_table(
        TableName="race",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for round_number in range(ROUNDS):
        key = f"order-{round_number}"
        won = race_conditional_puts(dynamodb, key)
        assert len(won) == 1, f"round {round_number}: {len(won)} conditional puts succeeded"
        stored = dynamodb.get_item(TableName="race", Key={"id": {"S": key}})["Item"]
        assert stored["racer"]["N"] == str(won[0])  # the winner's item, not overwritten by a loser


def race_conditional_puts(dynamodb: Any, key: str) -> list[int]:
    """RACERS threads put the same key at once, each only if it does not exist; the racers that succeeded."""
    start = threading.Barrier(RACERS)
    won: list[int] = []

    def put(racer: int) -> None:
        start.wait()
        try:
            dynamodb.put_item(
                TableName="race",
                Item={"id": {"S": key}, "racer": {"N": str(racer)}},
                ConditionExpression="attribute_not_exists(id)",
            )
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ConditionalCheckFailedException"
        else:
            won.append(racer)

    threads = [threading.Thread(target=put, args=(racer,)) for racer in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


def concurrency_seen(target: str, requests: int = 8) -> int:
    """The most requests with this X-Amz-Target the middleware let into the app at once."""
    return most_inside_at_once([target] * requests)


def most_inside_at_once(targets: list[str]) -> int:
    """The most of these requests (one thread each, all at once) the middleware let into the app together."""
    inside, most = 0, 0
    lock = threading.Lock()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.05)  # moto reading the item, parsing the condition: a window for another write
        with lock:
            inside -= 1
        return [b"{}"]

    middleware = AtomicDynamoDBWrites(app)
    threads = [
        threading.Thread(target=middleware, args=({"HTTP_X_AMZ_TARGET": target}, lambda *_: None)) for target in targets
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return most


def test_dynamodb_writes_go_through_one_at_a_time_and_nothing_else_waits() -> None:
    # moto reads the current item, evaluates the condition, then writes, with no lock of its own
    # (moto/dynamodb/models/table.py put_item): two racing conditional puts could both pass.
    for operation in (
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
        "ExecuteStatement",
    ):
        assert concurrency_seen(f"DynamoDB_20120810.{operation}") == 1, operation
    assert concurrency_seen("DynamoDB_20120810.GetItem") > 1
    for read in ("GetItem", "Query", "Scan", "BatchGetItem"):
        assert concurrency_seen(f"DynamoDB_20120810.{read}") > 1, read


def test_no_read_sees_a_write_while_moto_applies_it() -> None:
    # moto applies a transaction's items one at a time and rolls back by restoring copies: a read
    # in between could see writes that are then cancelled. Reads wait for it, and it for them.
    transaction, read = "DynamoDB_20120810.TransactWriteItems", "DynamoDB_20120810.Query"
    assert most_inside_at_once([transaction, read]) == 1
    assert most_inside_at_once([read, read, transaction, read]) <= 3  # the transaction alone, reads together
    assert most_inside_at_once(["DynamoDB_20120810.PutItem", read]) == 1  # moto's Query walks what PutItem changes
    assert concurrency_seen("AmazonSQS.ReceiveMessage") > 1


def test_a_transaction_copying_each_table_once_still_rolls_back_whole_or_lands_whole(moto_url: str) -> None:
    # copy_each_table_once changes how often moto copies a table for its rollback, never what
    # the rollback restores: a cancelled transaction over two tables leaves both as they were.
    dynamodb: Any = emulator_client("dynamodb", moto_url)
    for table in ("ledger", "marks"):
        dynamodb.create_table(
            TableName=table,
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
    dynamodb.put_item(TableName="marks", Item={"id": {"S": "taken"}})

    def puts(prefix: str, taken: bool) -> list[dict[str, Any]]:
        items = [{"Put": {"TableName": "ledger", "Item": {"id": {"S": f"{prefix}-{n}"}}}} for n in range(30)]
        mark = "taken" if taken else f"{prefix}-mark"
        condition = {"ConditionExpression": "attribute_not_exists(id)"}
        return [*items, {"Put": {"TableName": "marks", "Item": {"id": {"S": mark}}, **condition}}]

    with pytest.raises(ClientError, match="TransactionCanceledException"):
        dynamodb.transact_write_items(TransactItems=puts("cancelled", taken=True))
    assert dynamodb.scan(TableName="ledger")["Count"] == 0
    assert dynamodb.scan(TableName="marks")["Count"] == 1

    dynamodb.transact_write_items(TransactItems=puts("landed", taken=False))
    assert dynamodb.scan(TableName="ledger")["Count"] == 30
    assert dynamodb.scan(TableName="marks")["Count"] == 2
