"""Per-account rate limits: what may be set, and the token bucket (GCRA) that holds an account to its limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.rate_limits import (
    DEFAULT_RATE_LIMIT,
    MAX_BURST,
    MAX_RATE,
    AccountRateLimit,
    InvalidRateLimit,
    RateLimit,
    UsageKey,
    admit,
    usage_key_name,
    usage_plan_name,
)

pytestmark = pytest.mark.unit

NOW = 1_000.0


def test_the_default_is_ten_a_second_with_a_burst_of_fifty() -> None:
    assert (DEFAULT_RATE_LIMIT.rate, DEFAULT_RATE_LIMIT.burst) == (10, 50)
    assert AccountRateLimit().in_force == DEFAULT_RATE_LIMIT
    assert AccountRateLimit().is_default
    own = AccountRateLimit(RateLimit(20, 100), UsageKey("k1", "v1"))
    assert (own.in_force, own.is_default) == (RateLimit(20, 100), False)


@pytest.mark.parametrize(
    ("rate", "burst", "named"),
    [(0, 5, "rate"), (-1, 5, "rate"), (MAX_RATE + 1, 5, "rate"), (5, 0, "burst"), (5, MAX_BURST + 1, "burst")],
)
def test_a_limit_out_of_range_is_refused_naming_what(rate: int, burst: int, named: str) -> None:
    with pytest.raises(InvalidRateLimit, match=f"^{named} must be a whole number"):
        RateLimit(rate, burst)


@pytest.mark.parametrize(("rate", "burst"), [(1.5, 5), (5, 2.0), (True, 5), ("5", 5)])
def test_a_limit_must_be_whole_numbers(rate: object, burst: object) -> None:
    with pytest.raises(InvalidRateLimit):
        RateLimit(rate, burst)  # type: ignore[arg-type]


def test_a_full_bucket_admits_its_burst_at_once_then_refuses_for_one_interval() -> None:
    limit, state = RateLimit(rate=4, burst=3), 0.0
    for _ in range(3):
        admission = admit(state, NOW, limit)
        assert admission.admitted
        state = admission.next_arrival
    refused = admit(state, NOW, limit)
    assert not refused.admitted
    assert refused.next_arrival == state  # a refused request takes no token
    assert refused.wait_s == pytest.approx(0.25)
    assert refused.retry_after_s == 1
    # One interval later, one token is back: one request, not two.
    later = admit(state, NOW + 0.25, limit)
    assert later.admitted
    assert not admit(later.next_arrival, NOW + 0.25, limit).admitted


def test_requests_at_the_rate_are_all_admitted_however_many() -> None:
    limit, state = RateLimit(rate=5, burst=1), 0.0
    for n in range(100):
        admission = admit(state, NOW + n * 0.2, limit)
        assert admission.admitted, n
        state = admission.next_arrival


def test_a_quiet_bucket_refills_to_its_burst_and_no_further() -> None:
    limit, state = RateLimit(rate=10, burst=5), 0.0
    for _ in range(5):
        state = admit(state, NOW, limit).next_arrival
    later = NOW + 60.0  # long enough to refill 600 tokens, were there no cap
    admitted = 0
    while (admission := admit(state, later, limit)).admitted:
        state, admitted = admission.next_arrival, admitted + 1
    assert admitted == 5


@given(
    rate=st.integers(1, 50),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 0.5, allow_nan=False), min_size=1, max_size=200),
)
def test_no_window_admits_more_than_the_burst_plus_the_rate_times_its_length(
    rate: int, burst: int, gaps: list[float]
) -> None:
    limit, state, now, admitted = RateLimit(rate, burst), 0.0, NOW, []
    for gap in gaps:
        now += gap
        admission = admit(state, now, limit)
        if admission.admitted:
            state = admission.next_arrival
            admitted.append(now)
        else:
            # The wait is the time until the request would be admitted, and never more than one interval.
            assert 0 < admission.wait_s <= 1 / rate + 1e-9
            assert admission.retry_after_s == 1
            assert admit(state, now + admission.wait_s, limit).admitted
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= burst + rate * (admitted[j] - start) + 1e-6


def test_the_usage_plan_of_a_limit_is_named_by_it_and_the_defaults_is_the_stacks() -> None:
    assert usage_plan_name("brokerage-dev", DEFAULT_RATE_LIMIT) == "brokerage-dev-api"
    assert usage_plan_name("brokerage-dev", RateLimit(20, 100)) == "brokerage-dev-rate-20-burst-100"
    assert usage_key_name("brokerage-dev", "acme") == "brokerage-dev-account-acme"
