"""The capacity model's arithmetic: what binds at each step, what the setting lifts leave, and how cost scales."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bench import capacity
from bench.capacity import Design, Measured

MEASURED = Measured()
DESIGN = Design()


def test_at_100k_orders_per_s_the_kinesis_consumer_binds_first_with_the_measured_durations() -> None:
    first = capacity.binding(capacity.limits(100_000, MEASURED, DESIGN))

    assert first.name == "Kinesis consumer (apply_executions)"
    # 1,000,000 reports/s x 0.015 s each = 15,000 concurrent batches, against 2 shards x 1.
    assert first.demand == pytest.approx(15_000)
    assert first.use == pytest.approx(7_500)


def test_once_shards_and_parallelization_are_set_the_biggest_accounts_index_key_binds() -> None:
    lifted = capacity.with_settings_lifted(100_000, MEASURED, DESIGN)
    after = capacity.binding(capacity.limits(100_000, MEASURED, lifted))

    assert lifted.parallelization_factor == 10
    assert after.name == "account-orders index, biggest account's key"
    # 10 % of 100k orders/s, 13 index writes per order (3 + 10 reports), against 1,000 WCU per key.
    assert after.use == pytest.approx(130)


def test_with_aws_fast_applies_the_shard_writes_bind_before_the_consumer() -> None:
    fast = replace(MEASURED, apply_s=0.001)

    first = capacity.binding(capacity.limits(1_000, fast, DESIGN))

    assert first.name == "Kinesis shard writes"
    assert first.demand == pytest.approx(10)  # 10,000 reports/s at 1,000 records/s per shard


def test_per_order_costs_without_tiers_or_fixed_parts_are_the_same_at_every_rate() -> None:
    linear = ("Lambda requests", "DynamoDB writes", "DynamoDB reads", "Kinesis PUT payload units", "X-Ray traces")
    at_1k = capacity.costs_per_million(1_000, MEASURED, DESIGN)
    at_100k = capacity.costs_per_million(100_000, MEASURED, DESIGN)

    for name in linear:
        assert at_100k[name] == pytest.approx(at_1k[name]), name
    # DynamoDB: 40.02 write units x $0.625/M per order.
    assert at_1k["DynamoDB writes"] == pytest.approx(40.02 * 0.625)


def test_volume_tiers_only_lower_the_price_per_million() -> None:
    totals = [sum(capacity.costs_per_million(rate, MEASURED, DESIGN).values()) for rate in capacity.STEPS]

    assert totals == sorted(totals, reverse=True)
    assert totals[-1] > 0.9 * totals[0]  # tiers shave a few percent, the bill stays linear in orders


def test_tiered_pricing_charges_each_tier_its_own_price() -> None:
    tiers = ((10, 1.0), (float("inf"), 0.5))

    assert capacity.tiered(4, tiers) == 4
    assert capacity.tiered(14, tiers) == 12


def test_measured_inputs_come_from_the_bench_calls_json_when_given(tmp_path: Path) -> None:
    path = tmp_path / "calls.json"
    steps = {"create": 0.02, "place": 0.03, "apply one execution": 0.004}
    path.write_text(json.dumps({name: {"calls": 3.0, "seconds": s, "detail": {}} for name, s in steps.items()}))

    measured = capacity.load_measured(path)

    assert (measured.create_s, measured.place_s, measured.apply_s) == (0.02, 0.03, 0.004)
    assert measured.source == str(path)


def test_a_missing_measured_file_that_was_asked_for_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        capacity.load_measured(tmp_path / "absent.json")
