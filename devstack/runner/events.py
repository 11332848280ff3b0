"""Lambda-shaped events, the one builder of them: SQS, Kinesis and DynamoDB stream batches, schedules, failure records.

Pure functions from what the AWS APIs return (ReceiveMessage messages,
GetRecords records) to what Lambda passes a handler; the runner's pollers and
the benchmarks both build their events here.
"""

from __future__ import annotations

import base64
import datetime
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from devstack.lambda_context import DEFAULT_ACCOUNT, FunctionSpec

if TYPE_CHECKING:
    # For annotations only: retries imports epoch_seconds from here, so a run-time import would be circular.
    from devstack.runner.retries import Discard


def _b64(value: bytes | str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


def epoch_seconds(value: Any) -> float:
    """A boto3 timestamp (an aware datetime) or epoch number as epoch seconds."""
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return float(value)


def iso_ms(epoch_s: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z, as Lambda writes invocation records."""
    moment = datetime.datetime.fromtimestamp(epoch_s, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _lambda_message_attribute(attribute: Mapping[str, Any]) -> dict[str, Any]:
    """One message attribute as Lambda spells it: camelCase, binaries base64, list fields always present."""
    converted: dict[str, Any] = {}
    if "StringValue" in attribute:
        converted["stringValue"] = attribute["StringValue"]
    if "BinaryValue" in attribute:
        # boto3 hands back decoded bytes; the Lambda event carries base64 text.
        converted["binaryValue"] = _b64(attribute["BinaryValue"])
    converted["stringListValues"] = list(attribute.get("StringListValues", []))
    converted["binaryListValues"] = [_b64(item) for item in attribute.get("BinaryListValues", [])]
    converted["dataType"] = attribute["DataType"]
    return converted


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """A ReceiveMessage result message as one record of a Lambda SQS event."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": {name: str(value) for name, value in message.get("Attributes", {}).items()},
        "messageAttributes": {
            name: _lambda_message_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record.update(
        {
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
    )
    return record


def sqs_event(messages: Sequence[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping passes for one batch."""
    return {"Records": [sqs_record(message, queue_arn, region) for message in messages]}


def scheduled_event(rule_arn: str, region: str, account: str = DEFAULT_ACCOUNT) -> dict[str, Any]:
    """The event an EventBridge schedule rule passes to its target."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


def kinesis_record(
    record: Mapping[str, Any], shard_id: str, stream_arn: str, region: str, identity_arn: str
) -> dict[str, Any]:
    """A GetRecords result record as one record of a Lambda Kinesis event."""
    sequence_number = str(record["SequenceNumber"])
    kinesis: dict[str, Any] = {
        "kinesisSchemaVersion": "1.0",
        "partitionKey": record["PartitionKey"],
        "sequenceNumber": sequence_number,
        # boto3 hands back decoded bytes; the Lambda event carries base64 text.
        "data": _b64(record["Data"]),
        # Lambda sends epoch seconds with milliseconds, e.g. 1545084650.987.
        "approximateArrivalTimestamp": round(epoch_seconds(record["ApproximateArrivalTimestamp"]), 3),
    }
    if record.get("EncryptionType") not in (None, "NONE"):
        kinesis["encryptionType"] = record["EncryptionType"]  # present only for server-side encrypted records
    return {
        "kinesis": kinesis,
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        # Sequence numbers repeat across shards (always on moto): the shard makes the id unique.
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": identity_arn,
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


def kinesis_event(
    records: Sequence[Mapping[str, Any]], shard_id: str, stream_arn: str, region: str, identity_arn: str
) -> dict[str, Any]:
    """The event Lambda's Kinesis event source mapping passes for one batch of one shard."""
    return {"Records": [kinesis_record(record, shard_id, stream_arn, region, identity_arn) for record in records]}


def kinesis_failure_record(
    discard: Discard, shard_id: str, stream_arn: str, function: FunctionSpec, now_s: float
) -> dict[str, Any]:
    """The invocation record Lambda sends to a Kinesis mapping's on-failure destination for discarded records."""
    return stream_failure_record(discard, shard_id, stream_arn, function, now_s, "KinesisBatchInfo")


def stream_failure_record(
    discard: Discard, shard_id: str, stream_arn: str, function: FunctionSpec, now_s: float, batch_info_key: str
) -> dict[str, Any]:
    """The invocation record a stream mapping's on-failure destination gets (KinesisBatchInfo / DDBStreamBatchInfo)."""
    first, last = discard.records[0], discard.records[-1]
    message: dict[str, Any] = {
        "requestContext": {
            # Records that expired before any invocation have no request of their own.
            "requestId": discard.request_id or str(uuid.uuid4()),
            "functionArn": function.invoked_function_arn,
            "condition": discard.condition,
            "approximateInvokeCount": discard.invocations,
        }
    }
    if discard.invocations:
        response: dict[str, Any] = {"statusCode": 200, "executedVersion": function.function_version}
        if discard.function_error:
            # Absent when the function answered with a partial batch failure: it did not error.
            response["functionError"] = discard.function_error
        message["responseContext"] = response
    message.update(
        {
            "version": "1.0",
            "timestamp": iso_ms(now_s),
            batch_info_key: {
                "shardId": shard_id,
                "startSequenceNumber": str(first["SequenceNumber"]),
                "endSequenceNumber": str(last["SequenceNumber"]),
                "approximateArrivalOfFirstRecord": iso_ms(epoch_seconds(first["ApproximateArrivalTimestamp"])),
                "approximateArrivalOfLastRecord": iso_ms(epoch_seconds(last["ApproximateArrivalTimestamp"])),
                "batchSize": len(discard.records),
                "streamArn": stream_arn,
            },
        }
    )
    return message


def _lambda_attribute_value(value: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB attribute value as Lambda's event carries it: binaries as base64 text (boto3 hands back bytes)."""
    ((kind, inner),) = value.items()
    if kind == "B":
        return {kind: _b64(inner)}
    if kind == "BS":
        return {kind: [_b64(item) for item in inner]}
    if kind == "M":
        return {kind: {name: _lambda_attribute_value(item) for name, item in inner.items()}}
    if kind == "L":
        return {kind: [_lambda_attribute_value(item) for item in inner]}
    return {kind: inner}


def dynamodb_stream_record(record: Mapping[str, Any], stream_arn: str) -> dict[str, Any]:
    """A DynamoDB Streams GetRecords record as one record of a Lambda DynamoDB event."""
    change = dict(record["dynamodb"])
    # Lambda sends epoch seconds (a number: Chalice's DynamoDBRecord reads it with utcfromtimestamp).
    change["ApproximateCreationDateTime"] = float(int(epoch_seconds(change["ApproximateCreationDateTime"])))
    for image in ("Keys", "NewImage", "OldImage"):
        if image in change:
            change[image] = {name: _lambda_attribute_value(value) for name, value in change[image].items()}
    converted = {name: value for name, value in record.items() if name != "dynamodb"}
    converted["dynamodb"] = change
    converted["eventSourceARN"] = stream_arn
    return converted


def dynamodb_stream_event(records: Sequence[Mapping[str, Any]], stream_arn: str) -> dict[str, Any]:
    """The event Lambda's DynamoDB event source mapping passes for one batch of one shard."""
    return {"Records": [dynamodb_stream_record(record, stream_arn) for record in records]}
