"""The runner's SQS scaling: the policy (observations in, concurrency out) and the pollers following it over a fake."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from chalice.app import Chalice

from devstack.runner.app_runner import Runner
from devstack.runner.cli import MAX_SQS_CONCURRENCY_ENV, SCHEDULE_INTERVAL_ENV, parse_args
from devstack.runner.options import RunnerOptions
from devstack.runner.scaling import (
    LAMBDA_SQS_MAX_CONCURRENT_BATCHES,
    ScalingPolicy,
    ScalingSqsMapping,
    full_batch_size,
    maximum_concurrency,
)
from devstack.runner.sqs import SqsPoller, SqsSource
from tests.tooling.runner_support import wait_for

pytestmark = pytest.mark.unit


def test_full_batches_scale_up_to_the_maximum_and_not_beyond() -> None:
    policy = ScalingPolicy(maximum=4)
    concurrency, seen = 1, []
    for _ in range(10):
        concurrency = policy.next_concurrency(concurrency, received=10, full_batch=10)
        seen.append(concurrency)
    assert seen == [2, 3, 4, 4, 4, 4, 4, 4, 4, 4]


def test_empty_receives_scale_down_to_the_minimum_and_partial_ones_hold() -> None:
    policy = ScalingPolicy(maximum=4)
    assert policy.next_concurrency(3, received=4, full_batch=10) == 3
    concurrency, seen = 4, []
    for _ in range(6):
        concurrency = policy.next_concurrency(concurrency, received=0, full_batch=10)
        seen.append(concurrency)
    assert seen == [3, 2, 1, 1, 1, 1]
    assert ScalingPolicy(maximum=4, minimum=2).next_concurrency(2, received=0, full_batch=10) == 2
    with pytest.raises(ValueError):
        ScalingPolicy(maximum=0)


def test_the_maximum_is_the_mappings_capped_by_the_runner_and_lambdas_when_unset() -> None:
    source = SqsSource("handle", "q", batch_size=10, window_s=0, maximum_concurrency=50)
    assert maximum_concurrency(source, None) == 50
    assert maximum_concurrency(source, 4) == 4
    assert maximum_concurrency(source, 80) == 50
    unset = SqsSource("handle", "q", batch_size=10, window_s=0)
    assert maximum_concurrency(unset, None) == LAMBDA_SQS_MAX_CONCURRENT_BATCHES
    # One receive returns at most 10: without a window a batch of 10 is full whatever the batch size.
    assert full_batch_size(SqsSource("h", "q", batch_size=100, window_s=0)) == 10
    assert full_batch_size(SqsSource("h", "q", batch_size=100, window_s=1)) == 100
    assert full_batch_size(SqsSource("h", "q", batch_size=3, window_s=0)) == 3


def test_the_cap_is_chosen_on_the_command_line_under_either_name_or_in_the_environment() -> None:
    assert parse_args([], environ={}).max_sqs_concurrency is None
    assert parse_args(["--max-sqs-concurrency", "3"], environ={}).max_sqs_concurrency == 3
    assert parse_args(["--sqs-concurrency", "4"], environ={}).max_sqs_concurrency == 4  # chaos/harness.py's spelling
    assert parse_args([], environ={MAX_SQS_CONCURRENCY_ENV: "6"}).max_sqs_concurrency == 6
    assert parse_args(["--sqs-concurrency", "2"], environ={MAX_SQS_CONCURRENCY_ENV: "6"}).max_sqs_concurrency == 2
    with pytest.raises(SystemExit):
        parse_args(["--max-sqs-concurrency", "0"], environ={})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (MAX_SQS_CONCURRENCY_ENV, "four"),
        (MAX_SQS_CONCURRENCY_ENV, "0"),
        (MAX_SQS_CONCURRENCY_ENV, "2.5"),
        (SCHEDULE_INTERVAL_ENV, "soon"),
        (SCHEDULE_INTERVAL_ENV, "-1"),
    ],
)
def test_a_bad_value_in_the_environment_is_a_usage_error_naming_the_variable(
    variable: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args([], environ={variable: value})
    assert exit_info.value.code == 2  # argparse's usage error, not a traceback
    message = capsys.readouterr().err
    assert f"${variable}" in message and repr(value) in message, message
    assert "Traceback" not in message


class BlockingSqs:
    """A thread-safe SQS fake whose empty receive waits like a long poll, until a message arrives or the wait ends."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.receives = 0
        self.changed = threading.Condition()

    def add(self, *message_ids: str) -> None:
        with self.changed:
            self.messages += [{"MessageId": m, "ReceiptHandle": f"rh-{m}", "Body": "ok"} for m in message_ids]
            self.changed.notify_all()

    def get_queue_url(self, QueueName: str) -> dict[str, Any]:
        return {"QueueUrl": f"http://sqs.local/123456789012/{QueueName}"}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:q"}}

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        with self.changed:
            self.receives += 1
            self.changed.wait_for(lambda: self.messages, timeout=kwargs["WaitTimeSeconds"])
            count = kwargs["MaxNumberOfMessages"]
            taken, self.messages = self.messages[:count], self.messages[count:]
        return {"Messages": taken} if taken else {}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        with self.changed:
            self.deleted += [entry["ReceiptHandle"] for entry in Entries]
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries], "Failed": []}


class HeldBatches:
    """A handler that holds every batch until released, counting the batches it holds at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.handled: list[str] = []

    def __call__(self, records: list[dict[str, Any]]) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.release.wait(30)  # a bound for a broken test only
        with self.lock:
            self.running -= 1
            self.handled += [record["messageId"] for record in records]


def scaling_runner(fake: BlockingSqs, handler: HeldBatches, maximum: int, **options: Any) -> Runner:
    app = Chalice(app_name="unit")

    @app.on_sqs_message(queue="q", batch_size=5, maximum_concurrency=maximum)
    def handle(event: Any) -> None:
        handler(event.to_dict()["Records"])

    return Runner(app, RunnerOptions(**options), sqs_client=fake, region="us-east-1")


def test_a_backlog_adds_pollers_up_to_the_maximum_then_empty_receives_retire_all_but_one() -> None:
    fake, handler = BlockingSqs(), HeldBatches()
    fake.add(*(f"m{i}" for i in range(40)))
    runner = scaling_runner(fake, handler, maximum=3, poll_wait_s=1)
    (mapping,) = runner.workers
    assert isinstance(mapping, ScalingSqsMapping)
    runner.start()
    try:
        # Every poller holds its batch: only the maximum's worth can ever run at once.
        wait_for(lambda: handler.running == 3, "three batches held at once")
        assert mapping.peak == 3 and len(mapping.pollers) == 3
        handler.release.set()
        wait_for(lambda: len(handler.handled) == 40, "the backlog drained")
        wait_for(lambda: len(mapping.pollers) == 1, "empty receives to retire all but one poller")
    finally:
        handler.release.set()
        assert runner.stop(grace_s=5)
    assert handler.peak == 3 and mapping.peak == 3
    assert sorted(fake.deleted) == sorted(f"rh-m{i}" for i in range(40))
    assert mapping.concurrency == 1


def test_messages_a_receive_returns_after_stop_are_invoked_once_and_deleted_as_lambda_would() -> None:
    # Giving them back instead would spend one of their receives without an invocation (the
    # handler's last attempt and the RedrivePolicy count receives). The fake has no
    # ChangeMessageVisibility: a call to it would fail the delivery this test waits for.
    fake, handler = BlockingSqs(), HeldBatches()
    handler.release.set()
    runner = scaling_runner(fake, handler, maximum=3, poll_wait_s=20)
    (mapping,) = runner.workers
    assert isinstance(mapping, ScalingSqsMapping)
    runner.start()
    wait_for(lambda: fake.receives >= 1, "the long poll to start")
    stopped: list[bool] = []
    stopping = threading.Thread(target=lambda: stopped.append(runner.stop(grace_s=30)))
    stopping.start()
    # The poller's own flag, not the pool's: the pool sets its flag first, then each poller's.
    (poller,) = mapping.pollers
    wait_for(poller.stopping.is_set, "the stop to reach the polling poller")
    fake.add("late")  # the receive in progress returns it after the stop
    stopping.join(30)
    # The stop waited for the receive: abandoned in the emulator, it would hide the message it took.
    assert stopped == [True]
    assert handler.handled == ["late"] and fake.deleted == ["rh-late"]
    assert fake.messages == []  # nothing left behind, visible or not


def test_a_poller_that_cannot_be_added_is_skipped_and_the_batch_that_asked_for_it_is_still_invoked() -> None:
    fake, handler = BlockingSqs(), HeldBatches()
    handler.release.set()
    fake.add(*(f"m{i}" for i in range(20)))
    runner = scaling_runner(fake, handler, maximum=3, poll_wait_s=1)
    (built,) = runner.workers
    assert isinstance(built, ScalingSqsMapping)

    class UnstartablePoller(SqsPoller):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    def new_poller(index: int) -> SqsPoller:
        if index == 0:
            return built.new_poller(0)
        if index % 2:
            raise RuntimeError("no poller for you")
        return UnstartablePoller(built.source, runner.function("handle"), fake, "us-east-1", name=f"broken#{index}")

    mapping = ScalingSqsMapping(built.source, built.policy, new_poller)
    mapping.start()
    try:
        wait_for(lambda: len(handler.handled) == 20, "every full batch invoked although no poller could be added")
    finally:
        mapping.request_stop()
        assert mapping.join(10)
    assert sorted(handler.handled) == sorted(f"m{i}" for i in range(20))
    assert sorted(fake.deleted) == sorted(f"rh-m{i}" for i in range(20))
    assert [p.name for p in mapping.pollers] == ["sqs:handle#0"] and mapping.concurrency == 1


def test_the_pollers_of_a_mapping_share_one_client_with_a_connection_for_each() -> None:
    app = Chalice(app_name="unit")

    @app.on_sqs_message(queue="q", batch_size=5, maximum_concurrency=40)
    def handle(event: Any) -> None:
        pass

    # No client injected: the runner builds a real boto3 client (building one makes no request).
    (mapping,) = Runner(app, RunnerOptions(), region="us-east-1").workers
    assert isinstance(mapping, ScalingSqsMapping)
    first, second = mapping.new_poller(0), mapping.new_poller(1)
    assert first.sqs is second.sqs
    assert first.sqs.meta.config.max_pool_connections >= 40
