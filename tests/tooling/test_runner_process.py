"""The local runner as a real process against the emulator: SQS delivery, retries, dead letters, schedules, SIGTERM."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack.processes import ManagedProcess, python_module
from tests.tooling.runner_fixture_app import MAXIMUM_CONCURRENCY
from tests.tooling.runner_support import DEADLINE_S, REPO_ROOT, REPORT_FAILURES, RunningRunner, observed, wait_for

pytestmark = pytest.mark.integration

FIXTURE_APP = "tests.tooling.runner_fixture_app:app"


@dataclass(frozen=True)
class Queues:
    name: str
    url: str
    arn: str
    dlq_url: str


@pytest.fixture
def sqs(aws_endpoint: str) -> Any:
    return boto3.client("sqs")


def make_queues(sqs: Any, visibility_timeout_s: int = 30) -> Queues:
    suffix = uuid.uuid4().hex[:8]
    dlq_url = sqs.create_queue(QueueName=f"runner-dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    name = f"runner-q-{suffix}"
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout_s),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return Queues(name, url, arn, dlq_url)


def send(sqs: Any, queue_url: str, bodies: list[str]) -> list[str]:
    """Send in batches of 10; the message ids, in order."""
    ids: list[str] = []
    for offset in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[offset : offset + 10])]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not response.get("Failed")
        ids += [ok["MessageId"] for ok in sorted(response["Successful"], key=lambda ok: int(ok["Id"]))]
    return ids


def queue_depth(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def deliveries(table: str, run_id: str) -> list[tuple[str, str, str]]:
    """(messageId, body, ApproximateReceiveCount) of every record the handler was given."""
    return [
        (r["messageId"], r["body"], r["attributes"]["ApproximateReceiveCount"])
        for batch in observed(table, run_id, "batch")
        for r in batch["records"]
    ]


@contextmanager
def runner_process(
    tmp_path: Path,
    queue_name: str,
    table: str,
    *args: str,
    env: dict[str, str] | None = None,
    event_sources: dict[str, Any] | None = None,
) -> Iterator[RunningRunner]:
    run_id = uuid.uuid4().hex
    log_path = tmp_path / f"runner-{run_id[:8]}.log"
    # The fixture app's mapping reports failures unless a test says otherwise, as place_orders' does.
    settings_path = tmp_path / f"event-sources-{run_id[:8]}.json"
    settings_path.write_text(json.dumps({"consume": REPORT_FAILURES} if event_sources is None else event_sources))
    args = ("--event-sources", str(settings_path), *args)
    child_env = {
        **os.environ,
        "RUNNER_FIXTURE_QUEUE": queue_name,
        "RUNNER_FIXTURE_TABLE": table,
        "RUNNER_FIXTURE_RUN_ID": run_id,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with log_path.open("wb") as log_file:
        process = ManagedProcess(
            "runner",
            python_module("devstack.runner", "--app", FIXTURE_APP, *args),
            env=child_env,
            cwd=str(REPO_ROOT),
            stdout=log_file,
        ).start()
        running = RunningRunner(process, run_id, log_path)
        try:
            wait_for(
                lambda: "runner ready" in running.log() or not process.alive(), "the runner to start", timeout_s=60
            )
            assert process.alive(), running.log()
            yield running
        finally:
            process.stop()


def test_successful_messages_are_delivered_once_in_batches_of_at_most_five_then_deleted(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    queues = make_queues(sqs)
    ids = send(sqs, queues.url, ["ok"] * 12)
    sqs.send_message(
        QueueUrl=queues.url,
        MessageBody="ok",
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "order"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    # One poller: two concurrent receives on moto can both take one message (see the backlog test
    # below), and this test checks exactly-once delivery and receive counts of 1.
    with runner_process(tmp_path, queues.name, observations_table, "--max-sqs-concurrency", "1") as runner:
        wait_for(lambda: len(deliveries(observations_table, runner.run_id)) >= 13, "13 deliveries")
        wait_for(lambda: queue_depth(sqs, queues.url) == 0, "an empty queue")
        assert runner.process.alive()
    seen = deliveries(observations_table, runner.run_id)
    seen_ids = [message_id for message_id, _, _ in seen]
    assert len(seen_ids) == len(set(seen_ids)) == 13, seen
    assert set(ids) <= set(seen_ids)
    assert {count for _, _, count in seen} == {"1"}

    batches = observed(observations_table, runner.run_id, "batch")
    sizes = [len(batch["records"]) for batch in batches]
    assert max(sizes) == 5, sizes  # 13 waiting messages: the batch size, never more
    assert len({batch["request_id"] for batch in batches}) == len(batches)
    assert all(batch["function_name"] == "runner-fixture-dev-consume" for batch in batches)
    assert all(0 < batch["remaining_ms"] <= 60_000 for batch in batches)

    records = [r for batch in batches for r in batch["records"]]
    for record in records:
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"] == queues.arn
        assert record["awsRegion"] == "us-east-1"
        assert record["md5OfBody"] == hashlib.md5(b"ok").hexdigest()
        assert {"ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(
            record["attributes"]
        )
        assert all(isinstance(value, str) for value in record["attributes"].values())
    with_attributes = [r for r in records if r["messageAttributes"]]
    assert len(with_attributes) == 1
    assert with_attributes[0]["messageAttributes"] == {
        "kind": {"stringValue": "order", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
        "blob": {"binaryValue": "AAE=", "stringListValues": [], "binaryListValues": [], "dataType": "Binary"},
    }
    assert "invoked consume records=" in runner.log()


def test_a_reported_failure_is_retried_then_dead_lettered_while_its_batch_mates_are_deleted(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    queues = make_queues(sqs)
    ok_1, failing, ok_2, ok_3 = send(sqs, queues.url, ["ok", "fail", "ok", "ok"])
    with runner_process(tmp_path, queues.name, observations_table) as runner:
        wait_for(lambda: queue_depth(sqs, queues.dlq_url) == 1, "the failing message in the DLQ")
        wait_for(lambda: queue_depth(sqs, queues.url) == 0, "an empty queue")
    seen = deliveries(observations_table, runner.run_id)
    assert [count for message_id, _, count in seen if message_id == failing] == ["1", "2"]
    for ok in (ok_1, ok_2, ok_3):
        assert [count for message_id, _, count in seen if message_id == ok] == ["1"], seen

    first_batch = {r["messageId"] for r in observed(observations_table, runner.run_id, "batch")[0]["records"]}
    assert failing in first_batch and len(first_batch) > 1, "no partial batch was exercised"

    dead = sqs.receive_message(QueueUrl=queues.dlq_url, WaitTimeSeconds=1)["Messages"]
    assert [(m["MessageId"], m["Body"]) for m in dead] == [(failing, "fail")]


def test_without_report_batch_item_failures_a_reported_failure_is_deleted_with_its_batch(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    queues = make_queues(sqs)
    ok_1, failing, ok_2 = send(sqs, queues.url, ["ok", "fail", "ok"])
    with runner_process(tmp_path, queues.name, observations_table, event_sources={}) as runner:
        wait_for(lambda: len(deliveries(observations_table, runner.run_id)) >= 3, "three deliveries")
        wait_for(lambda: queue_depth(sqs, queues.url) == 0, "an empty queue")
        time.sleep(1.5)  # a chance for a wrong redelivery to show (a lower bound only)
    seen = deliveries(observations_table, runner.run_id)
    assert sorted(message_id for message_id, _, _ in seen) == sorted([ok_1, failing, ok_2]), seen
    assert queue_depth(sqs, queues.dlq_url) == 0
    assert "lacks ReportBatchItemFailures" in runner.log()


def test_a_raising_handler_keeps_the_whole_batch_and_the_runner_keeps_going(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    # A short visibility timeout: after a raise, nothing shortens it for us.
    queues = make_queues(sqs, visibility_timeout_s=1)
    (raising,) = send(sqs, queues.url, ["raise"])
    with runner_process(tmp_path, queues.name, observations_table) as runner:
        wait_for(lambda: queue_depth(sqs, queues.dlq_url) == 1, "the raising message in the DLQ")
        (later,) = send(sqs, queues.url, ["ok"])
        wait_for(lambda: any(m == later for m, _, _ in deliveries(observations_table, runner.run_id)), "a later ok")
        wait_for(lambda: queue_depth(sqs, queues.url) == 0, "an empty queue")
        assert runner.process.alive()
    seen = deliveries(observations_table, runner.run_id)
    assert [count for message_id, _, count in seen if message_id == raising] == ["1", "2"]
    assert len(observed(observations_table, runner.run_id, "done")) == 1  # only the later ok batch finished
    assert "RuntimeError: fixture: raise requested" in runner.log()
    assert "Traceback" in runner.log()


def test_a_schedule_fires_repeatedly_at_the_overridden_interval(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    queues = make_queues(sqs)
    with runner_process(tmp_path, queues.name, observations_table, env={"RUNNER_SCHEDULE_INTERVAL_S": "1"}) as runner:

        def three_firings() -> list[dict[str, Any]] | None:
            found = observed(observations_table, runner.run_id, "schedule")
            return found if len(found) >= 3 else None

        firings = wait_for(three_firings, "three schedule firings")
    events = [firing["event"] for firing in firings]
    assert all(e["detail-type"] == "Scheduled Event" and e["source"] == "aws.events" for e in events)
    assert all(
        e["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/runner-fixture-dev-tick-event"] for e in events
    )
    assert len({e["id"] for e in events}) == len(events)
    assert len({firing["request_id"] for firing in firings}) == len(firings)
    assert {firing["function_name"] for firing in firings} == {"runner-fixture-dev-tick"}


def test_a_queue_created_after_the_runner_started_is_picked_up(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    name = f"runner-late-{uuid.uuid4().hex[:8]}"
    with runner_process(tmp_path, name, observations_table) as runner:
        wait_for(lambda: "AWS call failed" in runner.log(), "the poller to report the missing queue")
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        (sent,) = send(sqs, url, ["ok"])
        wait_for(lambda: [m for m, _, _ in deliveries(observations_table, runner.run_id)] == [sent], "the delivery")
        wait_for(lambda: queue_depth(sqs, url) == 0, "an empty queue")


def test_sigterm_lets_the_in_flight_batch_finish_and_exits_zero_leaving_no_process(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    queues = make_queues(sqs)
    (slow,) = send(sqs, queues.url, ["sleep:2"])
    with runner_process(tmp_path, queues.name, observations_table) as runner:
        started = wait_for(lambda: observed(observations_table, runner.run_id, "batch"), "the slow batch to start")
        runner.process.signal(signal.SIGTERM)
        assert runner.process.process is not None
        returncode = runner.process.process.wait(timeout=DEADLINE_S)
        assert returncode == 0, runner.log()
        # Checked before the context manager's stop() would SIGKILL leftovers.
        with pytest.raises(ProcessLookupError):
            os.killpg(runner.process.pid, 0)  # nothing left in the runner's process group
    done = observed(observations_table, runner.run_id, "done")
    assert [d["request_id"] for d in done] == [started[0]["request_id"]]
    assert queue_depth(sqs, queues.url) == 0, "the in-flight message was not deleted"
    assert started[0]["records"][0]["messageId"] == slow
    assert "runner stopped" in runner.log()


def test_a_backlog_is_drained_by_concurrent_batches_never_more_than_the_mappings_maximum(
    sqs: Any, observations_table: str, tmp_path: Path
) -> None:
    queues = make_queues(sqs)
    # Slow batches, so a poller still holds its batch when the next full receive adds one more.
    ids = send(sqs, queues.url, ["sleep:0.1"] * 60)
    with runner_process(tmp_path, queues.name, observations_table) as runner:
        wait_for(lambda: len(deliveries(observations_table, runner.run_id)) >= 60, "60 deliveries")
        wait_for(lambda: queue_depth(sqs, queues.url) == 0, "an empty queue")
        batches = observed(observations_table, runner.run_id, "batch")
        log = runner.log()
    seen = [message_id for message_id, _, _ in deliveries(observations_table, runner.run_id)]
    # At least once, not exactly once: moto's ReceiveMessage takes no lock (moto/sqs/models.py,
    # receive_message; its server is threaded), so two concurrent pollers can both receive one
    # message, as SQS itself allows. Every message delivered and deleted is what is guaranteed.
    assert set(seen) == set(ids), "a message was lost, or one never sent was delivered"
    assert queue_depth(sqs, queues.dlq_url) == 0
    duplicates = sorted(message_id for message_id, count in Counter(seen).items() if count > 1)
    if duplicates:
        print(f"{len(duplicates)} of {len(ids)} messages delivered more than once (at-least-once): {duplicates}")
    running = [batch["running"] for batch in batches]
    assert max(running) > 1, f"never more than one batch at once: {running}"
    assert max(running) <= MAXIMUM_CONCURRENCY, running
    assert "concurrency 1 -> 2 after a full batch of 5" in log
    assert f"-> {MAXIMUM_CONCURRENCY + 1}" not in log
