"""Our patch of moto's DynamoDB Query (devstack/moto_indexes.py): moto's answers, without moto's walk of the table.

The reference is unpatched moto itself, in the same process (mock_aws): a
request runs once as patched and once with every patched method put back to
moto's own (each patch's __wrapped__). The property test keeps two tables
with one history, one written and queried as patched and one not, and
compares every write's outcome and every Query's pages; the other tests
compare one table's Query answered both ways.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

from devstack import moto_indexes, moto_server
from devstack.moto_indexes import PATCHED_METHODS, index_dynamodb_queries
from tests.tooling.moto_in_process import in_process_moto

pytestmark = pytest.mark.unit

REGION = "us-east-1"
IDS, ENTRIES, ACCOUNTS = ["o0", "o1", "o2", "o3"], ["e0", "e1"], ["a0", "a1", "a2"]
TIMES, SWEEPS, STATUSES = ["t0", "t1", "t2", "t3"], ["s0", "s1", "s2"], ["open", "filled"]
SHARDS = ["0", "1", "1.0", "2"]  # "1" and "1.0" are one number: one partition
# Every attribute an item may carry besides its key, with its type and values; all are optional.
ATTRIBUTES: dict[str, tuple[str, list[str]]] = {
    "open_account_id": ("S", ACCOUNTS), "account_id": ("S", ACCOUNTS), "created_at": ("S", TIMES),
    "pending_shard": ("N", SHARDS), "sweep_after": ("S", SWEEPS), "status": ("S", STATUSES),
}  # fmt: skip
# The orders table's indexes (infra/resources.yaml): (name, hash, range, projection).
GSIS = [
    ("account-open-orders", "open_account_id", "id", "KEYS_ONLY"),  # sparse
    ("account-orders", "account_id", "created_at", "ALL"),
    ("pending-sweep", "pending_shard", "sweep_after", "KEYS_ONLY"),  # sparse, numeric hash
]
LSIS = [("by-created", "id", "created_at", "ALL")]
# Two shapes: the orders table's (hash key only) and a hash + range one (as the order events table), with an LSI.
SHAPES = {"orders": ("id", None), "keyed": ("id", "entry")}
DOMAINS = {"id": IDS, "entry": ENTRIES, **{name: values for name, (_, values) in ATTRIBUTES.items()}}
TYPES = {"id": "S", "entry": "S", **{name: kind for name, (kind, _) in ATTRIBUTES.items()}}

_names = itertools.count()


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    index_dynamodb_queries()
    with in_process_moto():
        yield boto3.client("dynamodb", region_name=REGION)


def moto_backend() -> Any:
    """moto's DynamoDB backend the client reaches: its account follows the credentials in the environment
    (another suite's, when one ran before this module in the same session)."""
    account = boto3.client("sts", region_name=REGION).get_caller_identity()["Account"]
    return dynamodb_backends[account][REGION]


@contextlib.contextmanager
def unpatched() -> Iterator[None]:
    """moto as it comes, for the length of the block (under a test's spies too: they wrap what they spy on)."""
    patched = [(owner, name, getattr(owner, name)) for owner, name in PATCHED_METHODS]
    originals = [inspect.unwrap(method) for _, _, method in patched]
    try:
        for (owner, name, _), original in zip(patched, originals, strict=True):
            setattr(owner, name, original)
        yield
    finally:
        for owner, name, method in patched:
            setattr(owner, name, method)


def create_table(dynamodb: Any, shape: str, name: str | None = None) -> str:
    name = name or f"t{next(_names)}"
    hash_key, range_key = SHAPES[shape]
    key_schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key:
        key_schema.append({"AttributeName": range_key, "KeyType": "RANGE"})

    def index(spec: tuple[str, str, str, str]) -> dict[str, Any]:
        index_name, index_hash, index_range, projection = spec
        schema = [{"AttributeName": index_hash, "KeyType": "HASH"}, {"AttributeName": index_range, "KeyType": "RANGE"}]
        return {"IndexName": index_name, "KeySchema": schema, "Projection": {"ProjectionType": projection}}

    used = {hash_key, *([range_key] if range_key else []), *(attr for spec in GSIS + LSIS for attr in spec[1:3])}
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": attr, "AttributeType": TYPES[attr]} for attr in sorted(used)],
        KeySchema=key_schema,
        GlobalSecondaryIndexes=[index(spec) for spec in GSIS],
        **({"LocalSecondaryIndexes": [index(spec) for spec in LSIS]} if range_key else {}),
    )
    return name


def targets(shape: str) -> list[tuple[str | None, str, str | None]]:
    """What a Query can read in this shape: (index or None for the table, hash attribute, range attribute)."""
    hash_key, range_key = SHAPES[shape]
    indexes = GSIS + (LSIS if range_key else [])
    return [(None, hash_key, range_key)] + [
        (name, index_hash, index_range) for name, index_hash, index_range, _ in indexes
    ]


def typed(attr: str, value: str) -> dict[str, str]:
    return {TYPES[attr]: value}


# --- what a history is made of: plain data, so that hypothesis shows a failing one as it is


def keys(shape: str) -> st.SearchStrategy[dict[str, Any]]:
    hash_key, range_key = SHAPES[shape]
    parts = {hash_key: st.sampled_from(IDS).map(lambda v: typed(hash_key, v))}
    if range_key:
        parts[range_key] = st.sampled_from(ENTRIES).map(lambda v: typed(range_key, v))
    return st.fixed_dictionaries(parts)


ATTRS = st.fixed_dictionaries(
    {},
    optional={
        name: st.sampled_from(values).map(lambda v, k=kind: {k: v}) for name, (kind, values) in ATTRIBUTES.items()
    },
)
CONDITIONS = st.sampled_from(
    [None, None, "attribute_exists(id)", "attribute_not_exists(id)", "attribute_exists(open_account_id)"]
)


def writes(shape: str) -> dict[str, st.SearchStrategy[tuple[Any, ...]]]:
    key = keys(shape)
    removes = st.lists(st.sampled_from(sorted(ATTRIBUTES)), unique=True, max_size=3)
    put = st.tuples(st.just("Put"), key, ATTRS, CONDITIONS)
    update = st.tuples(st.just("Update"), key, st.tuples(ATTRS, removes), CONDITIONS)
    delete = st.tuples(st.just("Delete"), key, st.none(), CONDITIONS)
    check = st.tuples(st.just("ConditionCheck"), key, st.none(), CONDITIONS.filter(bool))
    unique = {"unique_by": lambda op: str(sorted(op[1].items())), "min_size": 1, "max_size": 4}
    batch = st.tuples(st.just("Batch"), st.lists(st.one_of(put, delete).map(lambda op: op[:3]), **unique))
    transact = st.tuples(st.just("Transact"), st.lists(st.one_of(put, update, delete, check), **unique))
    return {"Put": put, "Update": update, "Delete": delete, "Batch": batch, "Transact": transact}


def queries(shape: str) -> st.SearchStrategy[tuple[Any, ...]]:
    def of(target: tuple[str | None, str, str | None]) -> st.SearchStrategy[tuple[Any, ...]]:
        _, hash_attr, range_attr = target
        range_conditions = [None] if range_attr is None else [None, "=", "<", ">=", "BETWEEN", "begins_with"]
        return st.tuples(
            st.just("Query"),
            st.just(target),
            st.sampled_from(DOMAINS[hash_attr]),
            st.sampled_from(range_conditions),
            st.sampled_from(DOMAINS[range_attr]) if range_attr else st.none(),
            st.fixed_dictionaries(
                {
                    "ScanIndexForward": st.booleans(),
                    "Limit": st.sampled_from([None, 1, 2, 3]),
                    "Select": st.sampled_from([None, "COUNT"]),
                    "Filter": st.sampled_from([None, "#st = :st", "attribute_not_exists(#st)"]),
                }
            ),
        )

    return st.sampled_from(targets(shape)).flatmap(of)


# How often each kind of step comes: updates most, as they change an item in place, where no put or delete shows.
STEPS = ["Update"] * 3 + ["Put"] * 2 + ["Delete", "Batch", "Transact", "Transact"] + ["Query"] * 3 + ["Sweep"]


def histories(shape: str) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Writes and Queries; now and then a Query of every partition ("Sweep"): it builds each map at that point."""
    kinds = {**writes(shape), "Query": queries(shape), "Sweep": st.just(("Sweep",))}
    step = st.sampled_from(STEPS).flatmap(kinds.__getitem__)
    # Long enough to write, read, rewrite and read again (st.lists' own sizes favour a few steps).
    return st.integers(8, 30).flatmap(lambda size: st.lists(step, min_size=size, max_size=size))


# --- running a history


def update_request(table: str, key: dict[str, Any], change: tuple[dict[str, Any], list[str]]) -> dict[str, Any]:
    sets, removes = change
    removes = [attr for attr in removes if attr not in sets] or ([] if sets else ["status"])
    names = {f"#n{n}": attr for n, attr in enumerate([*sets, *removes])}
    by_attr = {attr: name for name, attr in names.items()}
    values = {f":v{n}": value for n, value in enumerate(sets.values())}
    clauses = []
    if sets:
        clauses.append("SET " + ", ".join(f"{by_attr[attr]} = :v{n}" for n, attr in enumerate(sets)))
    if removes:
        clauses.append("REMOVE " + ", ".join(by_attr[attr] for attr in removes))
    request = {"TableName": table, "Key": key, "UpdateExpression": " ".join(clauses), "ExpressionAttributeNames": names}
    return request | ({"ExpressionAttributeValues": values} if values else {})


def write_request(table: str, op: tuple[Any, ...]) -> dict[str, Any]:
    kind, key, payload, condition = op
    if kind == "Put":
        request = {"TableName": table, "Item": {**payload, **key}}
    elif kind == "Update":
        request = update_request(table, key, payload)
    else:
        request = {"TableName": table, "Key": key}
    return request | ({"ConditionExpression": condition} if condition else {})


def outcome(call: Any, **request: Any) -> Any:
    """What a write answered: nothing, or its error code (with a cancelled transaction's reasons)."""
    try:
        call(**request)
    except ClientError as error:
        reasons = [reason.get("Code") for reason in error.response.get("CancellationReasons", [])]
        return error.response["Error"]["Code"], reasons
    return None


def write(dynamodb: Any, table: str, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind in ("Put", "Update", "Delete"):
        return outcome(getattr(dynamodb, f"{kind.lower()}_item"), **write_request(table, op))
    if kind == "Batch":
        requests = [
            {"PutRequest": {"Item": {**attrs, **key}}} if batch_kind == "Put" else {"DeleteRequest": {"Key": key}}
            for batch_kind, key, attrs in op[1]
        ]
        return outcome(dynamodb.batch_write_item, RequestItems={table: requests})
    items = [{each[0]: write_request(table, each)} for each in op[1]]
    return outcome(dynamodb.transact_write_items, TransactItems=items)


def query_request(table: str, op: tuple[Any, ...]) -> dict[str, Any]:
    _, (index_name, hash_attr, range_attr), hash_value, comparison, range_value, options = op
    names, values = {"#h": hash_attr}, {":h": typed(hash_attr, hash_value)}
    condition = "#h = :h"
    if comparison is not None:
        names["#r"], values[":r"] = range_attr, typed(range_attr, range_value)
        if comparison == "BETWEEN":
            values[":r2"] = typed(range_attr, "t9")
            condition += " AND #r BETWEEN :r AND :r2"
        elif comparison == "begins_with":
            condition += " AND begins_with(#r, :r)"
        else:
            condition += f" AND #r {comparison} :r"
    request: dict[str, Any] = {"TableName": table, "KeyConditionExpression": condition}
    if index_name:
        request["IndexName"] = index_name
    if options["Filter"]:
        request["FilterExpression"] = options["Filter"]
        names["#st"] = "status"
        if ":st" in options["Filter"]:
            values[":st"] = {"S": "open"}
    for option in ("ScanIndexForward", "Limit", "Select"):
        if options[option] is not None:
            request[option] = options[option]
    return request | {"ExpressionAttributeNames": names, "ExpressionAttributeValues": values}


def pages(dynamodb: Any, request: dict[str, Any]) -> list[Any]:
    """Every page of a Query, LastEvaluatedKey to ExclusiveStartKey (or its error)."""
    answers: list[Any] = []
    start = None
    for _ in range(40):
        try:
            page = dynamodb.query(**request, **({"ExclusiveStartKey": start} if start else {}))
        except ClientError as error:
            return [*answers, ("error", error.response["Error"]["Code"])]
        answers.append({part: page.get(part) for part in ("Items", "Count", "ScannedCount", "LastEvaluatedKey")})
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    return answers


def both_ways(dynamodb: Any, request: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """One Query's pages as patched and as moto answers it."""
    patched = pages(dynamodb, request)
    with unpatched():
        return patched, pages(dynamodb, request)


PLAIN = {"ScanIndexForward": True, "Limit": None, "Select": None, "Filter": None}


def sweep(shape: str) -> list[tuple[Any, ...]]:
    """A plain Query of every partition of the table and of each index."""
    return [("Query", target, value, None, None, PLAIN) for target in targets(shape) for value in DOMAINS[target[1]]]


def written_to(shape: str, op: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """A plain Query of each index partition a write may have put an item into: where a missed write shows."""
    kind, parts = op[0], op[1:]
    if kind in ("Batch", "Transact"):
        parts = [each[1:] for each in op[1] if each[0] in ("Put", "Update")]
    else:
        parts = [parts] if kind in ("Put", "Update") else []
    written = [payload if isinstance(payload, dict) else payload[0] for _, payload, *_ in parts]
    return [
        ("Query", target, next(iter(attrs[target[1]].values())), None, None, PLAIN)
        for attrs in written
        for target in targets(shape)
        if target[0] and target[1] in attrs
    ]


def replay(dynamodb: Any, shape: str, history: list[tuple[Any, ...]], check_writes: bool = False) -> None:
    """The history on two tables, as patched and not, with the same answers.

    Swept first (every map is then built while the table is empty, so all
    that follows must reach the maps through marks) and last; with
    check_writes, each write is followed by Queries of where it wrote.
    """
    patched, plain = create_table(dynamodb, shape), create_table(dynamodb, shape)
    steps = []
    for op in [("Sweep",), *history, ("Sweep",)]:
        steps.extend(sweep(shape) if op == ("Sweep",) else [op])
        if check_writes and op[0] not in ("Sweep", "Query"):
            steps.extend(written_to(shape, op))
    try:
        for step, op in enumerate(steps):
            if op[0] == "Query":
                answer = pages(dynamodb, query_request(patched, op))
                with unpatched():
                    expected = pages(dynamodb, query_request(plain, op))
            else:
                answer = write(dynamodb, patched, op)
                with unpatched():
                    expected = write(dynamodb, plain, op)
            assert answer == expected, f"step {step}: {op}"
        items = [sorted(dynamodb.scan(TableName=name)["Items"], key=str) for name in (patched, plain)]
        assert items[0] == items[1]
    finally:
        dynamodb.delete_table(TableName=patched)
        dynamodb.delete_table(TableName=plain)


@pytest.mark.parametrize("shape", ["orders", "keyed"])
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), check_writes=st.booleans())
def test_every_write_and_query_answers_as_moto_does(dynamodb: Any, shape: str, data: Any, check_writes: bool) -> None:
    replay(dynamodb, shape, data.draw(histories(shape), label="history"), check_writes)


# --- the walk is gone


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tables whose maps were built (one walk of the table each)."""
    built: list[str] = []
    walk = moto_indexes._stored

    def counted(table: Table) -> Any:
        built.append(table.name)
        return walk(table)

    monkeypatch.setattr(moto_indexes, "_stored", counted)
    return built


@pytest.fixture
def looked_at(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many items each all_items() call gave (moto's query walks what it gives)."""
    seen: list[int] = []
    all_items = Table.all_items

    @functools.wraps(all_items)
    def counted(table: Table) -> Any:
        items = all_items(table)
        seen.append(len(items))
        return items

    monkeypatch.setattr(Table, "all_items", counted)
    return seen


def put_orders(table: str, count: int, accounts: int) -> None:
    """Orders o00000... of accounts a0... in turn, each account's every fourth open; straight into moto's table.

    (Through the client, a PutItem each, 5,000 take a while.)
    """
    stored = moto_backend().get_table(table)
    for n in range(count):
        account = f"a{n % accounts}"
        order = {"id": {"S": f"o{n:05}"}, "account_id": {"S": account}, "created_at": {"S": f"t{n:05}"}}
        if (n // accounts) % 4 == 0:
            order |= {"open_account_id": {"S": account}, "pending_shard": {"N": str(n % 3)}, "sweep_after": {"S": "s"}}
        stored.put_item(order)


def open_order(dynamodb: Any, table: str, order_id: str, account: str) -> None:
    values = {":a": {"S": account}}
    update = {"UpdateExpression": "SET open_account_id = :a", "ExpressionAttributeValues": values}
    dynamodb.update_item(TableName=table, Key={"id": {"S": order_id}}, **update)


def count_open(dynamodb: Any, table: str, account: str) -> int:
    request = {"IndexName": "account-open-orders", "KeyConditionExpression": "open_account_id = :a", "Select": "COUNT"}
    return int(dynamodb.query(TableName=table, ExpressionAttributeValues={":a": {"S": account}}, **request)["Count"])


def test_a_query_on_a_table_of_5000_items_looks_at_its_partition_only(
    dynamodb: Any, builds: list[str], looked_at: list[int]
) -> None:
    table = create_table(dynamodb, "orders")
    put_orders(table, 5000, accounts=50)  # 100 orders per account, 25 of them open

    assert [count_open(dynamodb, table, "a7") for _ in range(200)] == [25] * 200
    assert looked_at == [25] * 200
    assert builds == [table]  # the map was built in one walk, by the first Query

    # An order closed and one opened: re-read alone, no second walk.
    dynamodb.update_item(TableName=table, Key={"id": {"S": "o00007"}}, UpdateExpression="REMOVE open_account_id")
    open_order(dynamodb, table, "o00057", "a7")
    looked_at.clear()
    assert count_open(dynamodb, table, "a7") == 25
    assert looked_at == [25]
    assert builds == [table]

    looked_at.clear()
    account = {"IndexName": "account-orders", "KeyConditionExpression": "account_id = :v"}
    order = {"KeyConditionExpression": "id = :v"}
    counts = [
        dynamodb.query(TableName=table, ExpressionAttributeValues={":v": {"S": value}}, **request)["Count"]
        for request, value in ((account, "a7"), (order, "o00007"))
    ]
    assert counts == [100, 1]
    assert looked_at == [100, 1]


def test_a_query_the_maps_cannot_serve_walks_as_moto_does(dynamodb: Any, looked_at: list[int]) -> None:
    table = create_table(dynamodb, "orders")
    put_orders(table, 40, accounts=4)
    # No hash value to look up (no client request gets here: moto's responses refuse a Query without one).
    backend = moto_backend()
    arguments = {"table_name": table, "hash_key_dict": None, "range_comparison": None, "range_value_dicts": []}
    arguments |= {"limit": None, "exclusive_start_key": None, "scan_index_forward": True}
    arguments |= {"projection_expressions": None, "index_name": "account-orders", "hash_key_conditions": []}

    def answer() -> Any:
        items, scanned, last_key = backend.query(**arguments)
        return [item.to_json() for item in items], scanned, last_key

    patched = answer()
    with unpatched():
        plain = answer()
    assert patched == plain
    assert len(patched[0]) == 40
    assert looked_at == [40]  # the patched query walked them all (the spy sees no unpatched call)


# --- the paths that replace a table or write around put_item, delete_item and get_item


def open_orders_both_ways(dynamodb: Any, table: str, account: str = "a1") -> list[str]:
    """The account's open order ids, answered as patched; asserts moto answers the same."""
    request = {"TableName": table, "IndexName": "account-open-orders", "KeyConditionExpression": "open_account_id = :a"}
    patched, plain = both_ways(dynamodb, request | {"ExpressionAttributeValues": {":a": {"S": account}}})
    assert patched == plain
    return [item["id"]["S"] for item in patched[0]["Items"]]


def test_a_cancelled_transaction_leaves_the_restored_table_answered_right(dynamodb: Any, builds: list[str]) -> None:
    table = create_table(dynamodb, "orders")
    put_orders(table, 20, accounts=2)
    assert open_orders_both_ways(dynamodb, table) == ["o00001", "o00009", "o00017"]
    opened = {"TableName": table, "Item": {"id": {"S": "new"}, "open_account_id": {"S": "a1"}}}
    closed = {"TableName": table, "Key": {"id": {"S": "o00009"}}, "UpdateExpression": "REMOVE open_account_id"}
    fails = {"ConditionExpression": "attribute_not_exists(id)"}  # o00009 exists: the whole transaction rolls back
    with pytest.raises(ClientError, match="TransactionCanceled"):
        dynamodb.transact_write_items(TransactItems=[{"Put": opened}, {"Update": closed | fails}])
    assert open_orders_both_ways(dynamodb, table) == ["o00001", "o00009", "o00017"]
    assert builds == [table, table]  # the table put back is a copy, another object: a map of its own

    dynamodb.transact_write_items(TransactItems=[{"Put": opened}, {"Update": closed}])
    assert open_orders_both_ways(dynamodb, table) == ["new", "o00001", "o00017"]
    assert builds == [table, table]  # a transaction that lands keeps the table: its writes were marked


def test_an_item_leaving_and_entering_a_sparse_index_in_place(dynamodb: Any, builds: list[str]) -> None:
    table = create_table(dynamodb, "orders")
    put_orders(table, 8, accounts=2)
    assert open_orders_both_ways(dynamodb, table) == ["o00001"]
    key = {"id": {"S": "o00001"}}
    dynamodb.update_item(TableName=table, Key=key, UpdateExpression="REMOVE open_account_id")
    assert open_orders_both_ways(dynamodb, table) == []
    open_order(dynamodb, table, "o00001", "a1")
    dynamodb.put_item(TableName=table, Item={"id": {"S": "o00003"}, "open_account_id": {"S": "a1"}})
    dynamodb.delete_item(TableName=table, Key={"id": {"S": "o00003"}})
    dynamodb.batch_write_item(
        RequestItems={table: [{"PutRequest": {"Item": {"id": {"S": "b"}, "open_account_id": {"S": "a1"}}}}]}
    )
    assert open_orders_both_ways(dynamodb, table) == ["b", "o00001"]
    assert builds == [table]


def test_an_index_added_by_update_table_is_answered_from_the_items_already_there(dynamodb: Any) -> None:
    table = create_table(dynamodb, "orders")
    put_orders(table, 30, accounts=3)
    assert open_orders_both_ways(dynamodb, table) == ["o00001", "o00013", "o00025"]
    schema = [{"AttributeName": "created_at", "KeyType": "HASH"}]
    created = {"IndexName": "by-time", "KeySchema": schema, "Projection": {"ProjectionType": "ALL"}}
    definitions = [{"AttributeName": "created_at", "AttributeType": "S"}]
    dynamodb.update_table(
        TableName=table, AttributeDefinitions=definitions, GlobalSecondaryIndexUpdates=[{"Create": created}]
    )
    request = {"TableName": table, "IndexName": "by-time", "KeyConditionExpression": "created_at = :t"}
    patched, plain = both_ways(dynamodb, request | {"ExpressionAttributeValues": {":t": {"S": "t00004"}}})
    assert patched == plain
    assert [item["id"]["S"] for item in patched[0]["Items"]] == ["o00004"]


def test_partiql_writes_are_answered_right(dynamodb: Any) -> None:
    table = create_table(dynamodb, "orders")
    put_orders(table, 12, accounts=2)
    assert open_orders_both_ways(dynamodb, table) == ["o00001", "o00009"]
    dynamodb.execute_statement(Statement=f"INSERT INTO \"{table}\" VALUE {{'id': 'p1', 'open_account_id': 'a1'}}")
    dynamodb.execute_statement(Statement=f"UPDATE \"{table}\" SET open_account_id='a1' WHERE id='o00003'")
    dynamodb.execute_statement(Statement=f"DELETE FROM \"{table}\" WHERE id='o00009'")
    assert open_orders_both_ways(dynamodb, table) == ["o00001", "o00003", "p1"]


def test_a_table_deleted_and_created_again_or_restored_is_answered_from_its_own_items(dynamodb: Any) -> None:
    table = create_table(dynamodb, "orders")
    put_orders(table, 20, accounts=2)
    assert open_orders_both_ways(dynamodb, table) == ["o00001", "o00009", "o00017"]
    backup = dynamodb.create_backup(TableName=table, BackupName="before")["BackupDetails"]["BackupArn"]

    dynamodb.delete_table(TableName=table)
    create_table(dynamodb, "orders", name=table)
    put_orders(table, 4, accounts=2)
    assert open_orders_both_ways(dynamodb, table) == ["o00001"]

    dynamodb.restore_table_from_backup(TargetTableName=f"{table}-restored", BackupArn=backup)
    assert open_orders_both_ways(dynamodb, f"{table}-restored") == ["o00001", "o00009", "o00017"]


def test_patching_twice_wraps_once() -> None:
    index_dynamodb_queries()
    index_dynamodb_queries()
    for owner, name in PATCHED_METHODS:
        original = getattr(owner, name).__wrapped__
        assert not hasattr(original, "__wrapped__"), name


def test_writes_that_store_under_a_key_moto_did_not_read_first(dynamodb: Any, builds: list[str]) -> None:
    table = create_table(dynamodb, "keyed")
    first = {"id": {"S": "o0"}, "entry": {"S": "e0"}, "open_account_id": {"S": "a1"}}
    dynamodb.put_item(TableName=table, Item=first)
    assert open_orders_both_ways(dynamodb, table) == ["o0"]
    # A legacy Expected naming another range value: moto reads (o0, e0) and stores (o0, e1).
    second = first | {"entry": {"S": "e1"}}
    dynamodb.put_item(TableName=table, Item=second, Expected={"entry": {"Value": {"S": "e0"}}})
    assert open_orders_both_ways(dynamodb, table) == ["o0", "o0"]
    # Table.delete_item without a get_item before it, as PartiQL's DELETE calls it.
    stored = moto_backend().get_table(table)
    stored.delete_item(DynamoType({"S": "o0"}), DynamoType({"S": "e0"}))
    assert open_orders_both_ways(dynamodb, table) == ["o0"]
    assert builds == [table]


def test_our_moto_server_patches_moto_before_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[str] = []
    monkeypatch.setenv("MOTO_PORT", "5000")  # main() sets it if unset: not in this process's environment
    monkeypatch.setattr(moto_server, "copy_each_table_once", lambda: steps.append("copy each table once"))
    monkeypatch.setattr(moto_server, "index_dynamodb_queries", lambda: steps.append("index queries"))
    monkeypatch.setattr(moto_server, "count_queries_without_copies", lambda: steps.append("count without copies"))
    monkeypatch.setattr(moto_server, "run_simple", lambda *_, **__: steps.append("serve"))
    moto_server.main(["-p", "5000"])
    assert steps == ["copy each table once", "index queries", "count without copies", "serve"]
