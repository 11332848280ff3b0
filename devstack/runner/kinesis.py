"""The Kinesis event source mapping: Kinesis's calls for the shard pollers of devstack/runner/shards.py."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from chalice.app import KinesisEventConfig

from devstack.runner.events import epoch_seconds, kinesis_event
from devstack.runner.settings import MappingSettings
from devstack.runner.shards import (
    ShardListing,
    ShardPoller,
    StreamBatchReport,
    StreamInfo,
    StreamMappingWorker,
    StreamSource,
)

__all__ = [
    "KinesisReader",
    "KinesisShardPoller",
    "KinesisSource",
    "KinesisStreamWorker",
    "StreamBatchReport",
    "StreamInfo",
]


class KinesisSource(StreamSource):
    """A KinesisEventConfig (what `chalice package` deploys) plus the settings Chalice cannot express."""

    @property
    def stream_name(self) -> str:
        return self.stream

    @classmethod
    def from_config(cls, config: KinesisEventConfig, settings: MappingSettings | None = None) -> KinesisSource:
        return cls.of(config, config.stream, settings)


class KinesisReader:
    """Kinesis's calls: DescribeStreamSummary and ListShards, GetShardIterator, GetRecords."""

    service = "kinesis"
    kind = "kinesis"
    batch_info_key = "KinesisBatchInfo"

    def list_shards(self, client: Any, stream: str) -> ShardListing | None:
        summary = client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
        if summary.get("StreamStatus") not in ("ACTIVE", "UPDATING"):
            return None
        created = summary.get("StreamCreationTimestamp")
        info = StreamInfo(stream, str(summary["StreamARN"]), repr(epoch_seconds(created)) if created else "")
        shards: dict[str, list[str]] = {}
        kwargs: dict[str, Any] = {"StreamName": stream}
        while True:
            page = client.list_shards(**kwargs)
            for shard in page.get("Shards", []):
                parents = (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
                shards[str(shard["ShardId"])] = [str(parent) for parent in parents if parent]
            token = page.get("NextToken")
            if not token:
                return ShardListing(info, shards)
            kwargs = {"NextToken": token}  # ListShards refuses the stream name alongside a token

    def shard_iterator(
        self, client: Any, stream: StreamInfo, shard_id: str, after: str | None, start_at: float | None
    ) -> str:
        kwargs: dict[str, Any] = {"StreamName": stream.name, "ShardId": shard_id}
        if after is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after)
        elif start_at is not None:
            kwargs.update(
                ShardIteratorType="AT_TIMESTAMP", Timestamp=datetime.datetime.fromtimestamp(start_at, datetime.UTC)
            )
        else:
            kwargs.update(ShardIteratorType="TRIM_HORIZON")
        return str(client.get_shard_iterator(**kwargs)["ShardIterator"])

    def read(self, client: Any, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        response = client.get_records(ShardIterator=iterator, Limit=limit)
        return list(response.get("Records", [])), response.get("NextShardIterator")

    def event(
        self, records: Sequence[Mapping[str, Any]], shard_id: str, stream_arn: str, region: str, identity_arn: str
    ) -> dict[str, Any]:
        return kinesis_event(records, shard_id, stream_arn, region, identity_arn)


class KinesisShardPoller(ShardPoller):
    """One shard of a Kinesis event source mapping (see ShardPoller)."""

    reader = KinesisReader()


class KinesisStreamWorker(StreamMappingWorker):
    """A Kinesis event source mapping: a poller per shard of the stream (see StreamMappingWorker)."""

    poller_class = KinesisShardPoller
