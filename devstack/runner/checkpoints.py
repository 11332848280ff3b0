"""Shard checkpoints: each shard's progress for each function, kept as KCL keeps leases, in a table on the emulator."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from devstack.runner.events import iso_ms
from devstack.runner.worker import SourceUnavailable

# One logger for the whole runner, as before it was a package: log filters and lines stay the same.
log = logging.getLogger("devstack.runner")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@dataclass(frozen=True)
class Lease:
    """One shard's progress for one function, as KCL keeps it in its lease table."""

    key: str
    checkpoint: str | None = None  # the last sequence number done with (processed or discarded)
    start_at: float | None = None  # epoch seconds at which LATEST was fixed, if the mapping starts at LATEST
    shard_end: bool = False  # a closed shard read and done with to its end
    stream_created: str = ""  # tells a checkpoint of a deleted and recreated stream of the same name


class CheckpointStore:
    """Leases in a DynamoDB table on the emulator itself: they vanish with its other state, as they must.

    A file would outlive a restarted (in-memory) moto and point past the end
    of the new, empty shards. Only one runner process at a time is assumed:
    there is no lease ownership, only checkpoints.
    """

    def __init__(self, dynamodb: Any, table: str, ready_timeout_s: float = 60.0) -> None:
        self.dynamodb = dynamodb
        self.table = table
        self.ready_timeout_s = ready_timeout_s
        self._ready = False
        self._lock = threading.Lock()

    def ensure_table(self) -> None:
        """Create the table if it is missing and wait until it is active; cheap once done."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            try:
                status = str(self.dynamodb.describe_table(TableName=self.table)["Table"]["TableStatus"])
            except ClientError as exc:
                if _error_code(exc) != "ResourceNotFoundException":
                    raise
                try:
                    self.dynamodb.create_table(
                        TableName=self.table,
                        AttributeDefinitions=[{"AttributeName": "lease_key", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "lease_key", "KeyType": "HASH"}],
                        BillingMode="PAY_PER_REQUEST",
                    )
                    log.info("created the checkpoint table %s", self.table)
                except ClientError as create_exc:
                    if _error_code(create_exc) != "ResourceInUseException":  # created meanwhile: fine
                        raise
                status = "CREATING"
            deadline = time.monotonic() + self.ready_timeout_s
            while status != "ACTIVE":  # moto: at once; AWS and LocalStack: a few seconds
                if time.monotonic() > deadline:
                    raise SourceUnavailable(f"checkpoint table {self.table} still {status}")
                time.sleep(0.2)
                status = str(self.dynamodb.describe_table(TableName=self.table)["Table"]["TableStatus"])
            self._ready = True

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.dynamodb, operation)(TableName=self.table, **kwargs)
        except ClientError as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                self._ready = False  # the emulator restarted under us: create the table again next time
            raise

    def load(self, key: str) -> Lease | None:
        item = self._call("get_item", Key={"lease_key": {"S": key}}, ConsistentRead=True).get("Item")
        if not item:
            return None
        return Lease(
            key,
            checkpoint=item["checkpoint"]["S"] if "checkpoint" in item else None,
            start_at=float(item["start_at"]["N"]) if "start_at" in item else None,
            shard_end=bool(item.get("shard_end", {}).get("BOOL", False)),
            stream_created=str(item.get("stream_created", {}).get("S", "")),
        )

    def save(self, lease: Lease) -> None:
        item: dict[str, Any] = {
            "lease_key": {"S": lease.key},
            "shard_end": {"BOOL": lease.shard_end},
            "stream_created": {"S": lease.stream_created},
            "updated_at": {"S": iso_ms(time.time())},  # for people reading the table
        }
        if lease.checkpoint is not None:
            item["checkpoint"] = {"S": lease.checkpoint}
        if lease.start_at is not None:
            item["start_at"] = {"N": repr(lease.start_at)}
        self._call("put_item", Item=item)
