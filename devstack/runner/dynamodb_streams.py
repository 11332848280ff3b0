"""The DynamoDB Streams event source mapping: the service's calls for the shard pollers of devstack/runner/shards.py.

What Lambda does for `@app.on_dynamodb_record(stream_arn=...)`: shards from
DescribeStream, read from TRIM_HORIZON or LATEST, batches of up to batch_size,
the Lambda DynamoDB record shape (GetRecords' records with eventSourceARN),
checkpoints, partial batch responses, bisection, retries, a maximum record age
and the on-failure destination (infra/event_sources.json), all shared with the
Kinesis mapping. moto serves DynamoDB Streams on its one endpoint.

DynamoDB Streams has no AT_TIMESTAMP iterator: LATEST is fixed as a moment,
as for Kinesis, and the poller passes over the older records from TRIM_HORIZON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chalice.app import DynamoDBEventConfig

from devstack.runner.events import dynamodb_stream_event, epoch_seconds
from devstack.runner.settings import MappingSettings
from devstack.runner.shards import ShardListing, ShardPoller, StreamInfo, StreamMappingWorker, StreamSource

MAX_GET_RECORDS_LIMIT = 1000  # DynamoDB Streams' GetRecords limit (a mapping's batch may be up to 10,000)
# A stream being enabled has no shards to read yet; a disabled one keeps its records readable for 24 h.
_READABLE = ("ENABLED", "DISABLED")


class DynamoDBStreamSource(StreamSource):
    """A DynamoDBEventConfig (what `chalice package` deploys) plus the settings Chalice cannot express."""

    @property
    def stream_arn(self) -> str:
        return self.stream

    @classmethod
    def from_config(cls, config: DynamoDBEventConfig, settings: MappingSettings | None = None) -> DynamoDBStreamSource:
        return cls.of(config, config.stream_arn, settings)


class DynamoDBStreamsReader:
    """DynamoDB Streams' calls: DescribeStream, GetShardIterator, GetRecords.

    Records are wrapped in the shard pollers' shape: SequenceNumber and
    ApproximateArrivalTimestamp (the record's ApproximateCreationDateTime)
    beside the record itself, which the event carries unchanged.
    """

    service = "dynamodbstreams"
    kind = "dynamodb"
    batch_info_key = "DDBStreamBatchInfo"

    def list_shards(self, client: Any, stream: str) -> ShardListing | None:
        shards: dict[str, list[str]] = {}
        kwargs: dict[str, Any] = {"StreamArn": stream}
        while True:
            description = client.describe_stream(**kwargs)["StreamDescription"]
            if description.get("StreamStatus") not in _READABLE:
                return None
            for shard in description.get("Shards", []):
                parent = shard.get("ParentShardId")
                shards[str(shard["ShardId"])] = [str(parent)] if parent else []
            last = description.get("LastEvaluatedShardId")
            if not last:
                break
            kwargs = {"StreamArn": stream, "ExclusiveStartShardId": last}
        created = description.get("CreationRequestDateTime")
        # The ARN names the stream (its label is the creation time); a new stream of the table has a new ARN.
        info = StreamInfo(
            stream, stream, repr(epoch_seconds(created)) if created else str(description.get("StreamLabel"))
        )
        return ShardListing(info, shards)

    def shard_iterator(
        self, client: Any, stream: StreamInfo, shard_id: str, after: str | None, start_at: float | None
    ) -> str:
        kwargs: dict[str, Any] = {"StreamArn": stream.arn, "ShardId": shard_id}
        if after is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=after)
        else:
            kwargs.update(ShardIteratorType="TRIM_HORIZON")  # for LATEST too: see the module's docstring
        return str(client.get_shard_iterator(**kwargs)["ShardIterator"])

    def read(self, client: Any, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        response = client.get_records(ShardIterator=iterator, Limit=min(limit, MAX_GET_RECORDS_LIMIT))
        records = [
            {
                "SequenceNumber": str(record["dynamodb"]["SequenceNumber"]),
                "ApproximateArrivalTimestamp": record["dynamodb"]["ApproximateCreationDateTime"],
                "Record": record,
            }
            for record in response.get("Records", [])
        ]
        return records, response.get("NextShardIterator")

    def event(
        self, records: Sequence[Mapping[str, Any]], shard_id: str, stream_arn: str, region: str, identity_arn: str
    ) -> dict[str, Any]:
        return dynamodb_stream_event([record["Record"] for record in records], stream_arn)


class DynamoDBShardPoller(ShardPoller):
    """One shard of a DynamoDB Streams event source mapping (see ShardPoller)."""

    reader = DynamoDBStreamsReader()


class DynamoDBStreamWorker(StreamMappingWorker):
    """A DynamoDB Streams event source mapping: a poller per shard of the stream (see StreamMappingWorker)."""

    poller_class = DynamoDBShardPoller
