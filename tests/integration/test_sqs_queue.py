"""The SQS orders queue against a real emulator over HTTP."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config

from chalicelib.adapters.queue import QueueUnavailable, SqsOrdersQueue, parse_order_message
from devstack.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def sqs():
    return boto3.client("sqs")


@pytest.fixture
def queue_name(sqs, aws_endpoint: str) -> str:
    import uuid

    name = f"q-{uuid.uuid4().hex[:8]}"
    sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})
    return name


def test_a_placement_request_is_a_message_naming_the_order(sqs, queue_name: str) -> None:
    SqsOrdersQueue(queue_name).request_placement("order-1", "corr-1")
    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert [parse_order_message(m["Body"]) for m in messages] == [
        parse_order_message('{"order_id": "order-1", "correlation_id": "corr-1"}')
    ]
    assert parse_order_message(messages[0]["Body"]).correlation_id == "corr-1"


def test_retry_after_sets_the_visibility_of_a_received_message(sqs, queue_name: str) -> None:
    queue = SqsOrdersQueue(queue_name)
    queue.request_placement("order-2")
    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    message = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"][0]
    assert sqs.receive_message(QueueUrl=url).get("Messages") is None  # hidden for 30 s
    queue.retry_after(message["ReceiptHandle"], 0)
    again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"][0]
    assert again["MessageId"] == message["MessageId"]


def test_an_unreachable_queue_is_queue_unavailable(queue_name: str) -> None:
    dead = boto3.client(
        "sqs",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(connect_timeout=0.5, retries={"max_attempts": 1, "mode": "standard"}),
    )
    with pytest.raises(QueueUnavailable):
        SqsOrdersQueue(queue_name, sqs_client=dead).request_placement("order-3")
