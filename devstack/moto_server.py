"""moto's server, with DynamoDB's writes made atomic as they are on AWS: `python -m devstack.moto_server -p PORT`.

moto serves each request on a thread of its own and checks a write's
condition and applies the write without a lock, so two conditional PutItems
racing for one key can both succeed: chaos duplicate-posts saw two POSTs
with one idempotency key both answered 201 (50 at once per key, 2026-12-01),
which DynamoDB's conditional write excludes. The one write per key that our
guarantees rest on (create once per client order id, versioned updates)
must hold on the emulator too, so writes are serialized here; the other
services are not (moto runs on one core anyway: serializing DynamoDB
writes costs it little).

moto's TransactWriteItems deep-copies the whole table once per item of the
transaction, for its rollback: 33 items on a table of 6,000 took 5.6 s
(one copy per table: 0.085 s). Under the write lock above, one such
transaction of the order event log stalled every DynamoDB write of the
stack, and the log grows all session long. `copy_each_table_once` keeps
moto's rollback exactly as it is, with one copy per table and transaction.

moto also applies a transaction's items one by one and rolls back by putting
the copies back, so a read meanwhile can see items of a transaction that is
then cancelled (AWS never shows uncommitted writes): a reader of the order
event log saw an event that was rolled back, and its cursor then named no
event. DynamoDB reads therefore wait while a write runs (and a write for the
reads in progress); reads still run alongside each other.

moto's Query walks (and sorts) every item of the table, for the table's
key as for an index's: our POST /orders Queries the open-orders index, so
creates slowed as the orders table grew (34 -> 16 orders/s at a few
thousand orders; docs/BENCHMARKS.md, section 4). `index_dynamodb_queries`
(devstack/moto_indexes.py) hands moto's Query only the items under the
Query's hash key, from maps it keeps up to date with every write; what moto
does with them, and so what it answers, is unchanged. Its maps rely on the
serialization above: no write runs while a Query reads them. A COUNT
Query also skips moto's copy of every item it counts
(devstack/moto_count_queries.py).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models.table import Table
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

from devstack.moto_count_queries import count_queries_without_copies
from devstack.moto_indexes import index_dynamodb_queries

# Operations that check a condition (or a version) and write: each must see no other write in between.
DYNAMODB_WRITES = frozenset(
    f"DynamoDB_20120810.{operation}"
    for operation in (
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
        # PartiQL writes through the same code (and its transactions through the same copies).
        "ExecuteStatement",
        "BatchExecuteStatement",
        "ExecuteTransaction",
    )
)

# Reads that must not see a transaction half applied.
DYNAMODB_READS = frozenset(
    f"DynamoDB_20120810.{operation}" for operation in ("GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems")
)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ReadersOrOneWriter:
    """Any number of readers at once, or one writer alone; a waiting writer goes before new readers."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._changed:
                self._readers -= 1
                self._changed.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._changed:
            self._writers_waiting += 1
            self._changed.wait_for(lambda: not self._writing and not self._readers)
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._changed:
                self._writing = False
                self._changed.notify_all()


class AtomicDynamoDBWrites:
    """WSGI middleware: DynamoDB writes one at a time, transactions unseen by reads, everything else as before."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        # Writes one at a time and apart from reads: besides transactions, moto's Query walks a
        # table's item dicts while a PutItem may insert into them ("dictionary changed size").
        self._access = ReadersOrOneWriter()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET")
        # moto answers with a finished body; read it inside the lock all the same.
        if target in DYNAMODB_READS:
            with self._access.reading():
                return list(self.app(environ, start_response))
        if target in DYNAMODB_WRITES:
            with self._access.writing():
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)


def copy_each_table_once() -> None:
    """Make moto's TransactWriteItems copy each table it touches once for its rollback, not once per item.

    moto's method takes `copy.deepcopy` from its module's globals; for the
    length of one transaction those see a deepcopy that returns the first
    copy of a table again. Only DynamoDB writes run meanwhile (one at a time,
    AtomicDynamoDBWrites), and anything but a table is copied as before.
    """
    original = dynamodb_models.DynamoDBBackend.transact_write_items
    if getattr(original, "copies_each_table_once", False):
        return
    # The module global below is swapped for one transaction at a time, whoever calls it.
    swapping = threading.Lock()

    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        copies: dict[int, Any] = {}

        def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
            if not isinstance(value, Table):
                return copy.deepcopy(value, memo)
            if id(value) not in copies:
                copies[id(value)] = copy.deepcopy(value, memo)
            return copies[id(value)]

        with swapping:
            setattr(dynamodb_models, "copy", SimpleNamespace(deepcopy=deepcopy, copy=copy.copy))  # noqa: B010
            try:
                original(self, transact_items)
            finally:
                setattr(dynamodb_models, "copy", copy)  # noqa: B010

    transact_write_items.copies_each_table_once = True  # type: ignore[attr-defined]
    dynamodb_models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


class QuietRequestHandler(MotoRequestHandler):
    """moto's request handler without werkzeug's access log line per request, errors still logged.

    Formatting and writing a log line for each of the stack's hundreds of
    requests a second took ~8% of moto's busy time during `make bench`'s
    backlog (py-spy, 2026-12-02), on the one core moto has; the stack's
    log already has every function call, and bench.calls records requests.
    """

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).isdigit() and int(code) >= 500:
            super().log_request(code, size)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("-p", "--port", type=int, required=True, help="port to bind")
    args = parser.parse_args(argv)
    # As moto.server does: moto builds some URLs (SQS queue URLs) from it.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    copy_each_table_once()
    index_dynamodb_queries()
    count_queries_without_copies()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, AtomicDynamoDBWrites(app), threaded=True, request_handler=QuietRequestHandler)


if __name__ == "__main__":
    main()
