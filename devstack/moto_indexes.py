"""moto's DynamoDB Query looks only at the items it could answer with, as DynamoDB reads only a partition.

moto 5.2.5 answers every Query by walking the whole table: Table.query
(moto/dynamodb/models/table.py) takes `self.all_items()`, every item sorted,
and keeps those whose key matches, for the table's own key as for an index.
Our create Queries the sparse `account-open-orders` index on every POST
/orders, the sweep and the reconciler Query their indexes every few seconds:
on the local stack a create got slower as the orders table grew (34 -> 16
orders/s at 1 client, 38 -> 7/s at 16, at a few thousand orders:
docs/BENCHMARKS.md, section 4). `index_dynamodb_queries` makes a Query cost
what it reads.

What changes is which items moto's query looks at, never what it does with
them: for the length of one Table.query call, on that call's thread,
Table.all_items() returns only the candidates
- for a Query of the table by its hash key: the items stored under that key
  (`table.items[hash]`, moto's own storage, so never stale);
- for a Query of an index (GSI or LSI) with an equality on each of the
  index's hash attributes: the items whose attributes have those values,
  from a map kept here per table and attribute names;
- for anything else: every item, as before.
moto then applies its own key conditions, order, ExclusiveStartKey, Limit,
filters, projection and Select to the candidates. Its answer is the same as
long as the candidates include every item it would keep: a map may hold an
item that no longer matches (moto drops it), it must miss none.

How the maps cannot miss an item:
- An item changes only through Table.put_item (PutItem, BatchWriteItem,
  transactions, PartiQL, imports), Table.delete_item (the same, DeleteItem) or
  in place after Table.get_item returned it (DynamoDBBackend.update_item
  mutates the item get_item gives it). Each of the three marks its key; the
  next Query of that table re-reads the marked keys before it answers.
  (GetItem marks a key too: that costs one re-read.)
- Marks go to the maps of that very Table object. A transaction's rollback
  puts copies in place of the tables, a restore makes a new table, a table
  deleted and created again is a new object: a table that is not the object
  its maps were built from gets new maps, built in one pass at its next Query.
- A write whose key cannot be read off (a delete of a whole partition, a key
  that is not a key value) and every PartiQL statement drop the table's maps
  (rebuilt in one pass at the next Query) rather than follow them.
- The maps are keyed by attribute names, not by index: an index that
  UpdateTable adds, changes or deletes changes nothing in them (moto resolves
  the Query's index by name itself).
- put_item and delete_item mark once they have written, so a Query that
  reads the mark sees the write. UpdateItem changes the item after the
  get_item that marked it: a Query must not run in between, and on our server
  none does (AtomicDynamoDBWrites: a write waits for the reads in progress,
  reads wait for a write; moto's own walk needs that as much). Queries and
  GetItems run alongside each other: one lock guards the maps and the marks.

Verified against moto 5.2.5 only (the version requirements-dev.txt pins):
another version refuses the patch, so that someone reads moto's Query and
write paths again before trusting the maps.
"""

from __future__ import annotations

import copy
import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import moto
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table

VERIFIED_MOTO_VERSION = "5.2.5"

# Everything patched, (class, method): the test runs the same requests with and without them.
PATCHED_METHODS = (
    (Table, "query"),
    (Table, "all_items"),
    (Table, "get_item"),
    (Table, "put_item"),
    (Table, "delete_item"),
    (DynamoDBBackend, "execute_statement"),
)

# A key or attribute value as DynamoType's == and hash see it, (type, cast value): a snapshot
# that a later in-place update of the DynamoType cannot change under a dict.
Frozen = tuple[str, Any]
Key = tuple[Frozen, Frozen | None]  # an item's primary key, (hash, range or None)
Values = tuple[Frozen, ...]  # one item's values of one map's attribute names

_lock = threading.Lock()  # the maps and the marks, across concurrent reads
_current = threading.local()  # .override: (table, candidates) while that table's query runs on this thread


def _frozen(value: Any) -> Frozen | None:
    """The value as (type, cast value), or None if it is no hashable value (a list, map or set).

    A value left out equals no query value worth indexing: DynamoType's ==
    compares type and cast value, and the values a Query gives (S, N, B) are
    hashable, so an unhashable attribute value can never equal one.
    """
    if not isinstance(value, DynamoType):
        return None
    frozen = (value.type, value.cast_value)
    try:
        hash(frozen)
    except TypeError:
        return None
    return frozen


def _frozen_key(hash_value: Any, range_value: Any, table: Table) -> Key:
    """The primary key as stored; raises ValueError for anything that is not one."""
    hash_part = _frozen(hash_value)
    range_part = _frozen(range_value) if table.range_key_attr is not None else None
    if hash_part is None or (table.range_key_attr is not None and range_part is None):
        raise ValueError(f"not a key of table {table.name}: {hash_value!r}, {range_value!r}")
    return hash_part, range_part


def _values(item: Item, names: tuple[str, ...]) -> Values | None:
    """The item's values of these attributes; None if it lacks one (moto's query skips it too) or one is unhashable."""
    values = []
    for name in names:
        value = _frozen(item.attrs.get(name))
        if value is None:
            return None
        values.append(value)
    return tuple(values)


def _stored(table: Table) -> Iterator[tuple[Key, Item]]:
    """Every item of the table with its key, from moto's storage: {hash: item} or {hash: {range: item}}.

    The dicts are copied before they are walked: a concurrent GetItem of a
    missing key adds an empty partition to moto's defaultdict.
    """
    for hash_value, stored in list(table.items.items()):
        if table.range_key_attr is None:
            if isinstance(stored, Item):
                yield _frozen_key(hash_value, None, table), stored
        elif isinstance(stored, dict):
            for range_value, item in list(stored.items()):
                if isinstance(item, Item):
                    yield _frozen_key(hash_value, range_value, table), item


def _stored_item(table: Table, hash_value: DynamoType, range_value: DynamoType | None) -> Item | None:
    """The item stored under this key now, if any (`.get`: a lookup must not add to moto's defaultdict)."""
    stored = table.items.get(hash_value)
    if table.range_key_attr is None:
        return stored if isinstance(stored, Item) else None
    item = stored.get(range_value) if isinstance(stored, dict) else None
    return item if isinstance(item, Item) else None


class _Map:
    """A table's items by their values of some attributes: values -> {key: item}."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.items: dict[Values, dict[Key, Item]] = {}
        self.placed: dict[Key, Values] = {}  # where each key is now, to take it out when it changes

    def place(self, key: Key, item: Item | None) -> None:
        """Put the item stored under key (None: there is none) where its values are now."""
        old = self.placed.pop(key, None)
        if old is not None:
            same_values = self.items[old]
            del same_values[key]
            if not same_values:
                del self.items[old]
        values = None if item is None else _values(item, self.names)
        if item is not None and values is not None:
            self.items.setdefault(values, {})[key] = item
            self.placed[key] = values


class _TableMaps:
    """The maps of one Table object, and the keys written since they were last brought up to date."""

    def __init__(self, table: Table) -> None:
        self.table = weakref.ref(table)
        self.maps: dict[tuple[str, ...], _Map] = {}
        self.marked: dict[Key, tuple[DynamoType, DynamoType | None]] = {}

    def candidates(self, table: Table, names: tuple[str, ...], values: Values) -> list[Item]:
        for key, (hash_value, range_value) in self.marked.items():
            item = _stored_item(table, hash_value, range_value)
            for map_ in self.maps.values():
                map_.place(key, item)
        self.marked.clear()
        if names not in self.maps:
            map_ = _Map(names)
            for key, item in _stored(table):
                map_.place(key, item)
            self.maps[names] = map_
        return list(self.maps[names].items.get(values, {}).values())


# One entry per table ARN (account, region, name): a table replaced by another object under its
# name (a rollback, a restore, a re-creation) has its maps replaced, not kept beside the new ones.
_maps: dict[str, _TableMaps] = {}


def _maps_of(table: Table) -> _TableMaps:
    maps = _maps.get(table.table_arn)
    if maps is None or maps.table() is not table:
        maps = _maps[table.table_arn] = _TableMaps(table)
    return maps


def _forget(table: Table) -> None:
    with _lock:
        maps = _maps.get(table.table_arn)
        if maps is not None and maps.table() is table:
            del _maps[table.table_arn]


def _mark(table: Table, hash_value: Any, range_value: Any) -> None:
    """Note that the item under this key may change: its next Query re-reads it first."""
    with _lock:
        maps = _maps.get(table.table_arn)
        if maps is None or maps.table() is not table:
            return  # no maps of this object: any built later are built from the items as they are then
        try:
            key = _frozen_key(hash_value, range_value, table)
            range_copy = copy.deepcopy(range_value) if table.range_key_attr is not None else None
            maps.marked[key] = (copy.deepcopy(hash_value), range_copy)
        except Exception:
            # A key we cannot read (moto's delete_item with no range key pops a whole partition): rebuild.
            del _maps[table.table_arn]


def _candidates(table: Table, arguments: dict[str, Any]) -> list[Item] | None:
    """The items a Query (Table.query's arguments) could answer with; None: every item (moto's walk)."""
    index_name = arguments.get("index_name")
    if not index_name:
        hash_value = arguments.get("hash_key")
        if _frozen(hash_value) is None:
            return None
        stored = table.items.get(hash_value)
        if table.range_key_attr is None:
            return [stored] if isinstance(stored, Item) else []
        return list(stored.values()) if isinstance(stored, dict) else []
    # As moto finds the index (the last of a name) and reads the conditions (the last of a name).
    index = {index.name: index for index in table.all_indexes()}.get(index_name)
    if index is None:
        return None
    names = tuple(key["AttributeName"] for key in index.schema if key["KeyType"] == "HASH")
    conditions = dict(arguments.get("hash_key_conditions") or [])
    if not names or any(name not in conditions for name in names):
        return None
    values = []
    for name in names:
        value = _frozen(conditions[name])
        if value is None:
            return None
        values.append(value)
    with _lock:
        return _maps_of(table).candidates(table, names, tuple(values))


def _stored_order(item: Item) -> Any:
    """moto's all_items() order, the order its query sees the items in (table.py, Table.all_items)."""
    return (item.hash_key, item.range_key) if item.range_key else item.hash_key


def _patch_reads() -> None:
    original_query: Callable[..., Any] = Table.query
    original_all_items: Callable[[Table], list[Item]] = Table.all_items
    signature = inspect.signature(original_query)

    @functools.wraps(original_query)
    def query(self: Table, *args: Any, **kwargs: Any) -> Any:
        try:
            candidates = _candidates(self, signature.bind(self, *args, **kwargs).arguments)
        except Exception:
            # Whatever went wrong here, moto's own walk answers; the maps are rebuilt at the next Query.
            _forget(self)
            candidates = None
        if candidates is None:
            return original_query(self, *args, **kwargs)
        previous = getattr(_current, "override", None)
        _current.override = (self, candidates)
        try:
            return original_query(self, *args, **kwargs)
        finally:
            _current.override = previous

    @functools.wraps(original_all_items)
    def all_items(self: Table) -> list[Item]:
        override = getattr(_current, "override", None)
        if override is None or override[0] is not self:
            return original_all_items(self)
        return sorted(override[1], key=_stored_order)

    Table.query = query  # type: ignore[method-assign]
    Table.all_items = all_items  # type: ignore[method-assign]


def _patch_writes() -> None:
    original_get_item: Callable[..., Any] = Table.get_item
    original_put_item: Callable[..., Any] = Table.put_item
    original_delete_item: Callable[..., Any] = Table.delete_item
    original_execute_statement: Callable[..., Any] = DynamoDBBackend.execute_statement

    @functools.wraps(original_get_item)
    def get_item(self: Table, hash_key: Any, range_key: Any = None, *args: Any, **kwargs: Any) -> Any:
        _mark(self, hash_key, range_key)  # UpdateItem changes the item this returns, in place
        if self.range_key_attr is not None and range_key and hash_key not in self.items:
            # moto would add an empty partition to its defaultdict here, while other reads may be walking
            # it ("dictionary changed size during iteration" in a Scan): nothing is stored under the key.
            return None
        return original_get_item(self, hash_key, range_key, *args, **kwargs)

    @functools.wraps(original_put_item)
    def put_item(self: Table, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        # Marked after the write (in finally: whatever moto stored before raising): a Query that reads
        # the mark then sees the item as written. get_item marked the key moto checked, which is another
        # key when a legacy Expected names another range value.
        try:
            return original_put_item(self, item_attrs, *args, **kwargs)
        finally:
            try:
                hash_value: Any = DynamoType(item_attrs[self.hash_key_attr])
                range_value = DynamoType(item_attrs[self.range_key_attr]) if self.range_key_attr is not None else None
            except Exception:
                hash_value = range_value = None  # moto refused it (stores nothing); _mark drops the maps all the same
            _mark(self, hash_value, range_value)

    @functools.wraps(original_delete_item)
    def delete_item(self: Table, hash_key: Any, range_key: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original_delete_item(self, hash_key, range_key, *args, **kwargs)
        finally:
            _mark(self, hash_key, range_key)  # PartiQL deletes without a get_item first

    @functools.wraps(original_execute_statement)
    def execute_statement(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        # PartiQL writes through put_item and delete_item, which mark; it is rare enough to drop the maps anyway.
        try:
            return original_execute_statement(self, *args, **kwargs)
        finally:
            for table in list(self.tables.values()):
                _forget(table)

    Table.get_item = get_item  # type: ignore[method-assign]
    Table.put_item = put_item  # type: ignore[method-assign]
    Table.delete_item = delete_item  # type: ignore[method-assign]
    DynamoDBBackend.execute_statement = execute_statement  # type: ignore[method-assign]


def index_dynamodb_queries() -> None:
    """Make moto's Table.query look only at the items under the Query's hash key (see the module's docstring).

    Idempotent: a second call changes nothing. Refuses (RuntimeError) any moto
    but the one whose Query and write paths were read for it.
    """
    if getattr(Table.query, "indexed_queries", False):
        return
    if moto.__version__ != VERIFIED_MOTO_VERSION:
        raise RuntimeError(
            f"devstack.moto_indexes was verified against moto {VERIFIED_MOTO_VERSION}, not {moto.__version__}: "
            "read moto's Table.query and its write paths again (the module's docstring lists them)"
        )
    _patch_writes()
    _patch_reads()
    Table.query.indexed_queries = True  # type: ignore[attr-defined]
