"""The chaos scenarios (`make chaos`) at a small size: every fault and every check, on a stack of its own each."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chaos.config import SMALL, RunContext
from chaos.results import Result
from chaos.scenarios import new_seed, run_scenario

pytestmark = pytest.mark.e2e

# CHAOS_SEED replays a failed run: the seed is in every assertion message.
SEED = int(os.environ.get("CHAOS_SEED") or new_seed())


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> RunContext:
    return RunContext(seed=SEED, log_dir=Path(tmp_path_factory.mktemp("chaos")))


def assert_clean(result: Result) -> None:
    problems = "\n".join(result.problems()[:20])
    assert result.ok, f"{result.scenario} (seed {result.seed}, log {result.log_path}):\n{problems}"
    assert (len(result.lost), len(result.duplicated), len(result.stuck)) == (0, 0, 0)


def test_exchange_failing_30_percent_of_calls_places_each_order_once_or_fails_it_after_every_attempt(
    context: RunContext,
) -> None:
    result = run_scenario("exchange-failures", SMALL, context)
    assert_clean(result)
    assert result.orders == SMALL.failures.orders
    assert result.details["exchange"]["failures"] > 0


def test_runner_killed_several_times_loses_nothing_and_places_nothing_twice(context: RunContext) -> None:
    result = run_scenario("runner-kills", SMALL, context)
    assert_clean(result)
    assert result.orders == SMALL.kills.orders
    assert len(result.details["in_flight_at_kills"]) == SMALL.kills.kills


def test_emulator_outage_answers_the_exact_500_stores_nothing_and_places_everything_after(
    context: RunContext,
) -> None:
    result = run_scenario("emulator-outage", SMALL, context)
    assert_clean(result)
    assert result.details["acknowledged_before_outage"] >= SMALL.outage.orders_before
    assert result.details["posts_during_outage"] > 0


def test_duplicated_reordered_reports_and_bridge_kills_end_as_the_exchange_says(context: RunContext) -> None:
    result = run_scenario("feed-chaos", SMALL, context)
    assert_clean(result)
    assert result.orders == SMALL.feed.orders
    assert result.details["duplicated_reports"] > 0
    assert result.details["reordered_reports"] > 0


def test_concurrent_duplicate_posts_make_exactly_one_order_per_key(context: RunContext) -> None:
    result = run_scenario("duplicate-posts", SMALL, context)
    assert_clean(result)
    assert set(result.details["answers"]) <= {200, 201}


def test_lost_answers_and_lost_reports_converge_to_the_exchanges_record_order_by_order(context: RunContext) -> None:
    result = run_scenario("lost-answers", SMALL, context)
    assert_clean(result)
    assert result.orders == SMALL.lost_answers.orders
    assert result.details["failed_but_live"] == 0
    # The faults really happened: answers and reports were lost, and calls failed.
    assert result.details["lost_answers"] > 0, result.faults
    assert result.details["lost_reports"] > 0, result.faults
    assert result.details["exchange"]["failures"] > 0, result.faults
    assert result.details["convergence_s"] is not None, result.faults


def test_stream_clients_reconnecting_with_their_cursor_end_with_every_event_despite_feed_and_runner_faults(
    context: RunContext,
) -> None:
    result = run_scenario("stream-chaos", SMALL, context)
    assert_clean(result)
    assert result.orders == SMALL.stream.orders
    assert result.details["events"] >= 2 * SMALL.stream.orders  # created and at least one more each
    # The faults really happened: reports repeated and reordered, clients dropped mid-stream.
    assert result.details["duplicated_reports"] > 0, result.faults
    assert result.details["reordered_reports"] > 0, result.faults
    assert result.details["client_drops"] > 0, result.faults
