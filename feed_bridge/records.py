"""Execution reports as Kinesis records: parsing a feed message and the feed URL to resume from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Kinesis limits: a record's data plus partition key at most 1 MiB, a partition
# key 1..256 Unicode characters.
MAX_RECORD_BYTES = 1024 * 1024
MAX_PARTITION_KEY_CHARS = 256
# Reports without a usable client_order_id still go to the stream, unchanged,
# so that the consumer dead-letters them with its reason; they share one key.
FALLBACK_PARTITION_KEY = "invalid-client-order-id"


@dataclass(frozen=True, slots=True)
class Record:
    """One report on its way to Kinesis: Data is the feed's text, byte for byte."""

    seq: int
    partition_key: str
    data: bytes

    @property
    def size(self) -> int:
        """Bytes this record counts against the PutRecords limits (data plus partition key)."""
        return len(self.data) + len(self.partition_key.encode("utf-8"))


class InvalidReport(ValueError):
    """A feed message that cannot be tracked or cannot be put on Kinesis; seq if it had a valid one."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


def parse_report(message: str | bytes) -> Record:
    """The record for one feed message; InvalidReport if it has no usable seq or is too big for Kinesis.

    Only seq and client_order_id are read: the data is the message itself, not
    a re-serialisation, so the consumer sees exactly what the exchange sent.
    """
    data = message if isinstance(message, bytes) else message.encode("utf-8")
    try:
        report = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidReport(f"not JSON: {exc}") from exc
    if not isinstance(report, dict):
        raise InvalidReport(f"not a JSON object but {type(report).__name__}")
    seq = report.get("seq")
    # bool is an int in Python, but `true` is no sequence number.
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise InvalidReport(f"seq must be an integer >= 1, got {seq!r}")
    client_order_id = report.get("client_order_id")
    partition_key = (
        client_order_id
        if isinstance(client_order_id, str) and 0 < len(client_order_id) <= MAX_PARTITION_KEY_CHARS
        else FALLBACK_PARTITION_KEY
    )
    record = Record(seq, partition_key, data)
    if record.size > MAX_RECORD_BYTES:
        raise InvalidReport(
            f"seq {seq}: {record.size} bytes, above the Kinesis record limit of {MAX_RECORD_BYTES}", seq=seq
        )
    return record


def feed_url(base_url: str, from_seq: int) -> str:
    """base_url with from_seq set (replacing any from_seq already in it, keeping other parameters)."""
    parts = urlsplit(base_url)
    query = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key != "from_seq"]
    query.append(("from_seq", str(from_seq)))
    return urlunsplit(parts._replace(query=urlencode(query)))
