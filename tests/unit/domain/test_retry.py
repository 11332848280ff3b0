"""Exponential backoff with jitter for placement retries."""

from __future__ import annotations

import random

import pytest

from chalicelib.domain.retry import RetryPolicy

pytestmark = pytest.mark.unit


def test_delays_grow_exponentially_within_their_jitter_band() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_base_s=2, backoff_max_s=10_000)
    rng = random.Random(7)
    for attempt in range(1, 9):
        full = 2 * 2 ** (attempt - 1)
        for _ in range(50):
            delay = policy.delay_after(attempt, rng)
            assert full / 2 <= delay <= full


def test_delays_are_whole_seconds_at_least_one_and_capped() -> None:
    policy = RetryPolicy(max_attempts=30, backoff_base_s=1, backoff_max_s=60)
    delays = [policy.delay_after(attempt, random.Random(attempt)) for attempt in range(1, 30)]
    assert all(isinstance(d, int) and 1 <= d <= 60 for d in delays)
    assert delays[-1] >= 30  # the cap's jitter band, not the uncapped exponential


def test_jitter_spreads_retries_of_orders_that_failed_together() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_base_s=8, backoff_max_s=900)
    rng = random.Random(1)
    assert len({policy.delay_after(4, rng) for _ in range(100)}) > 10


def test_last_attempt() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_base_s=1, backoff_max_s=10)
    assert not policy.is_last(2)
    assert policy.is_last(3)
    assert policy.is_last(4)
