"""moto's server, with DynamoDB's writes made atomic as they are on AWS: `python -m devstack.moto_server -p PORT`.

moto serves each request on a thread of its own and checks a write's
condition and applies the write without a lock, so two conditional PutItems
racing for one key can both succeed: chaos duplicate-posts saw two POSTs
with one idempotency key both answered 201 (50 at once per key, 2026-12-01),
which DynamoDB's conditional write excludes. The one write per key that our
guarantees rest on (create once per client order id, versioned updates)
must hold on the emulator too, so writes are serialized here; reads and the
other services are not (moto runs on one core anyway: serializing DynamoDB
writes costs it little).
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

# Operations that check a condition (or a version) and write: each must see no other write in between.
DYNAMODB_WRITES = frozenset(
    f"DynamoDB_20120810.{operation}"
    for operation in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class AtomicDynamoDBWrites:
    """WSGI middleware: DynamoDB write requests run one at a time, everything else as before."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET") not in DYNAMODB_WRITES:
            return self.app(environ, start_response)
        with self._lock:
            # moto answers with a finished body; read it inside the lock all the same.
            return list(self.app(environ, start_response))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("-p", "--port", type=int, required=True, help="port to bind")
    args = parser.parse_args(argv)
    # As moto.server does: moto builds some URLs (SQS queue URLs) from it.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, AtomicDynamoDBWrites(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
