"""Capacity model past this machine: which AWS limit binds first at 1k, 10k and 100k orders/s, and the cost per million.

`python -m bench.capacity` prints the tables docs/SCALING.md shows. Its inputs are the per-order call counts and
durations `bench.calls` measures: read from a JSON file if one is given or found at MEASURED_PATH (the shape of
bench.calls' StepFigures: {"create": {"calls": 3.0, "seconds": 0.015, ...}, "place": ..., "apply one execution": ...}),
else the defaults below (a `bench.calls --orders 30` run of 2026-12-01), and the output says which.

Nothing here calls AWS: it is arithmetic on published limits and list prices, so a reader can redo every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench.common import markdown_table

MEASURED_PATH = Path("build/bench/calls.json")
STEPS = (1_000, 10_000, 100_000)


@dataclass(frozen=True)
class Measured:
    """Per-order figures from bench.calls (moto server on loopback; AWS in-region calls take a similar few ms)."""

    create_s: float = 0.0151  # authorizer + route handler, per order: GetItem key, PutItem, SendMessage
    place_s: float = 0.0233  # placement handler per order with a 0 s exchange: GetItem, 2 conditional UpdateItem
    apply_s: float = 0.0150  # apply_executions per report, every report for a different order (the worst shape)
    source: str = "defaults in bench/capacity.py (bench.calls --orders 30, 2026-12-01)"


@dataclass(frozen=True)
class Design:
    """The deployed settings (infra/, .chalice/config.json, chalicelib) and the model's stated assumptions."""

    reports_per_order: float = 10  # execution reports per order: the brief's "10x that in execution reports"
    exchange_latency_s: float = 0.5  # the simulator's default; a placement batch waits for it once
    placement_batch: int = 10  # placement_batch_size (SQS batch, one thread per record)
    executions_batch: int = 100  # executions_batch_size (Kinesis batch)
    kinesis_shards: int = 2  # ExecutionsShardCount default in infra/resources.yaml
    parallelization_factor: int = 1  # not set on the Kinesis mapping: AWS's default
    pending_index_shards: int = 8  # PENDING_INDEX_SHARDS in chalicelib/adapters/orders_table.py
    largest_account_share: float = 0.10  # share of all orders sent by the biggest account (assumption)
    lambda_memory_gb: float = 0.5  # lambda_memory_size 512
    report_bytes: int = 311  # a fill report as the bridge puts it (data + partition key), measured
    log_bytes_per_order: float = 482 + 563 + 350 * 2.1  # create + placement lines (measured) + START/END/REPORT
    log_bytes_per_report: float = 549  # "order updated by executions", measured
    xray_sampled: float = 0.05  # X-Ray's default rule: 1 request/s + 5 %
    bridge_put_s: float = 0.05  # one PutRecords of 500 records on AWS (assumption, not measured here)
    bridge_parse_per_s: float = 190_000  # feed_bridge.records.parse_report on one core, measured
    busy_hours_per_month: float = 6.5 * 21  # the peak rate holds for a US equity session, 21 days; idle otherwise


# AWS limits (us-east-1 defaults); the sources are listed in docs/SCALING.md.
API_RPS_QUOTA = 10_000
LAMBDA_ACCOUNT_CONCURRENCY = 1_000
LAMBDA_SCALE_PER_10S = 1_000
SQS_MAPPING_MAX_CONCURRENCY = 1_000
KINESIS_SHARD_RECORDS_PER_S = 1_000
KINESIS_SHARD_BYTES_PER_S = 1_048_576
DYNAMODB_PARTITION_WCU = 1_000
DYNAMODB_TABLE_WRU = 40_000  # on-demand, per table
BRIDGE_BATCH = 500  # PutRecords' maximum, the bridge's default batch
HOURS_PER_MONTH = 730

# us-east-1 list prices (USD per unit), tiered by monthly volume: (units in the tier, price); last tier unbounded.
API_GATEWAY_REST = ((333e6, 3.50e-6), (667e6, 2.80e-6), (19e9, 2.38e-6), (math.inf, 1.51e-6))
LAMBDA_GB_SECOND = ((6e9, 0.0000166667), (9e9, 0.000015), (math.inf, 0.000013334))
SQS_STANDARD = ((100e9, 0.40e-6), (100e9, 0.30e-6), (math.inf, 0.24e-6))
LAMBDA_REQUEST = 0.20e-6
DYNAMODB_WRU = 0.625e-6
DYNAMODB_RRU = 0.125e-6
KINESIS_SHARD_HOUR = 0.015
KINESIS_PUT_UNIT = 0.014e-6
CLOUDWATCH_LOGS_GB = 0.50
XRAY_TRACE = 5.00e-6
FARGATE_BRIDGE_MONTH = (0.25 * 0.04048 + 0.5 * 0.004445) * HOURS_PER_MONTH  # 0.25 vCPU, 0.5 GB, always on


@dataclass(frozen=True)
class Limit:
    name: str
    demand: float
    capacity: float | None  # None: set by a contract (the exchange), not by AWS
    unit: str
    lift: str

    @property
    def use(self) -> float | None:
        return None if self.capacity is None else self.demand / self.capacity


def tiered(units: float, tiers: Sequence[tuple[float, float]]) -> float:
    """Cost of `units` in one month under tiered prices."""
    cost, left = 0.0, units
    for size, price in tiers:
        used = min(left, size)
        cost += used * price
        left -= used
        if left <= 0:
            break
    return cost


def dynamodb_units(design: Design) -> dict[str, float]:
    """Write and read units per order, by where they land. Items are under 1 KB (576 B measured): 1 unit each."""
    updates_from_reports = design.reports_per_order  # worst case: each report in its own batch
    # Every write of an order: create, claim, placed, one per applied batch of reports.
    order_writes = 3 + updates_from_reports
    return {
        "orders table": order_writes,
        # ALL projection: every write of the item writes the index too, all on the account's one key.
        "account-orders index": order_writes,
        # Sparse KEYS_ONLY: put at create, the claim moves sweep_after (a key: delete + put), placed removes it.
        "pending-sweep index": 1 + 2 + 1,
        "executions table": design.reports_per_order,
        "feed checkpoint": design.reports_per_order / BRIDGE_BATCH,
        # Strongly consistent reads under 4 KB: the API key, the placement's read, one per order per apply batch.
        "reads": 1 + 1 + updates_from_reports,
    }


def concurrency(rate: float, measured: Measured, design: Design) -> dict[str, float]:
    """Lambda concurrency each function needs at `rate` orders/s (Little's law: arrivals x time in the function)."""
    place_batch_s = measured.place_s * design.placement_batch + design.exchange_latency_s
    return {
        "api_handler + authorizer": rate * measured.create_s,
        "place_orders": rate / design.placement_batch * place_batch_s,
        "apply_executions": rate * design.reports_per_order * measured.apply_s,
    }


def shards_for_writes(reports_per_s: float, design: Design) -> float:
    """Shards the reports need on the way in: 1,000 records/s or 1 MiB/s per shard, whichever binds."""
    by_bytes = reports_per_s * design.report_bytes / KINESIS_SHARD_BYTES_PER_S
    return max(reports_per_s / KINESIS_SHARD_RECORDS_PER_S, by_bytes)


def limits(rate: float, measured: Measured, design: Design) -> list[Limit]:
    """Every limit on the path at `rate` orders/s, with what it takes and what it allows as deployed."""
    needed = concurrency(rate, measured, design)
    reports = rate * design.reports_per_order
    units = dynamodb_units(design)
    shards_needed = shards_for_writes(reports, design)
    return [
        Limit(
            "API Gateway requests/s (account, region)",
            rate,
            API_RPS_QUOTA,
            "req/s",
            "Service Quotas increase (L-8A5B8E43); beyond: more regions or accounts",
        ),
        Limit(
            "Lambda concurrency (account, region)",
            sum(needed.values()),
            LAMBDA_ACCOUNT_CONCURRENCY,
            "instances",
            "Service Quotas increase; shorten place_orders' batch (see exchange)",
        ),
        Limit(
            "SQS mapping concurrency (place_orders)",
            needed["place_orders"],
            SQS_MAPPING_MAX_CONCURRENCY,
            "batches",
            "ESM provisioned mode (MaximumPollers), or N queues + mappings keyed by order id",
        ),
        Limit(
            "Kinesis shard writes",
            shards_needed,
            design.kinesis_shards,
            "shards",
            f"ExecutionsShardCount >= {math.ceil(shards_needed / 0.8)} (80 % headroom)",
        ),
        Limit(
            "Kinesis consumer (apply_executions)",
            needed["apply_executions"],
            design.kinesis_shards * design.parallelization_factor,
            "batches",
            "ParallelizationFactor up to 10, then more shards",
        ),
        Limit(
            "DynamoDB orders table (on-demand, per table)",
            rate * units["orders table"],
            DYNAMODB_TABLE_WRU,
            "WRU/s",
            "Service Quotas increase (per-table on-demand maximum)",
        ),
        Limit(
            "account-orders index, biggest account's key",
            rate * design.largest_account_share * units["account-orders index"],
            DYNAMODB_PARTITION_WCU,
            "WRU/s",
            "KEYS_ONLY/INCLUDE projection (1 write per order), or shard the key account_id#n",
        ),
        Limit(
            "pending-sweep index, per shard key",
            rate * units["pending-sweep index"] / design.pending_index_shards,
            DYNAMODB_PARTITION_WCU,
            "WRU/s",
            f"PENDING_INDEX_SHARDS >= {math.ceil(rate * 4 / DYNAMODB_PARTITION_WCU / 0.8)}",
        ),
        Limit(
            "feed bridge (one WebSocket, one PutRecords at a time)",
            reports,
            min(BRIDGE_BATCH / design.bridge_put_s, design.bridge_parse_per_s),
            "reports/s",
            "concurrent PutRecords lanes by partition key; then several sessions and bridges",
        ),
        Limit(
            "exchange session: orders in flight",
            rate * design.exchange_latency_s,
            None,
            "orders",
            "venue's per-session rate: more sessions, a placement gateway holding them",
        ),
    ]


def binding(rows: Sequence[Limit]) -> Limit:
    """The limit closest to (or furthest past) its capacity: the one that binds first as the rate grows."""
    return max((row for row in rows if row.use is not None), key=lambda row: row.use or 0.0)


def with_settings_lifted(rate: float, measured: Measured, design: Design) -> Design:
    """The deployed design with every lift that is only a setting: shards, ParallelizationFactor, index shards.

    What still binds after this needs a quota increase or a design change.
    """
    reports = rate * design.reports_per_order
    write_shards = shards_for_writes(reports, design)
    consumer_shards = concurrency(rate, measured, design)["apply_executions"] / 10
    return replace(
        design,
        kinesis_shards=max(design.kinesis_shards, math.ceil(max(write_shards, consumer_shards) / 0.8)),
        parallelization_factor=10,
        pending_index_shards=max(design.pending_index_shards, math.ceil(rate * 4 / DYNAMODB_PARTITION_WCU / 0.8)),
    )


def costs_per_million(rate: float, measured: Measured, design: Design) -> dict[str, float]:
    """USD per million orders at `rate` orders/s sustained for the busy hours of a month, list prices."""
    monthly_orders = rate * 3600 * design.busy_hours_per_month
    per_order_seconds = (
        measured.create_s
        + (measured.place_s * design.placement_batch + design.exchange_latency_s) / design.placement_batch
        + design.reports_per_order * measured.apply_s
    )
    units = dynamodb_units(design)
    writes = sum(value for name, value in units.items() if name != "reads")
    # Shards sized for the peak (writes and the consumer), kept all month.
    shards = with_settings_lifted(rate, measured, design).kinesis_shards
    invocations = 2 + 1 / design.placement_batch + design.reports_per_order / design.executions_batch
    log_bytes = design.log_bytes_per_order + design.reports_per_order * design.log_bytes_per_report
    monthly = {
        "API Gateway (REST)": tiered(monthly_orders, API_GATEWAY_REST),
        "Lambda requests": monthly_orders * invocations * LAMBDA_REQUEST,
        "Lambda GB-seconds": tiered(monthly_orders * per_order_seconds * design.lambda_memory_gb, LAMBDA_GB_SECOND),
        # SendMessage, and per batch the mapping's ReceiveMessage and DeleteMessageBatch.
        "SQS": tiered(monthly_orders * (1 + 2 / design.placement_batch), SQS_STANDARD),
        "DynamoDB writes": monthly_orders * writes * DYNAMODB_WRU,
        "DynamoDB reads": monthly_orders * units["reads"] * DYNAMODB_RRU,
        "Kinesis shard-hours (all month)": shards * KINESIS_SHARD_HOUR * HOURS_PER_MONTH,
        "Kinesis PUT payload units": monthly_orders * design.reports_per_order * KINESIS_PUT_UNIT,
        "CloudWatch Logs ingestion": monthly_orders * log_bytes / 2**30 * CLOUDWATCH_LOGS_GB,
        "X-Ray traces": monthly_orders * invocations / 2 * design.xray_sampled * XRAY_TRACE,
        "feed bridge task (Fargate)": FARGATE_BRIDGE_MONTH,
    }
    return {name: cost / monthly_orders * 1e6 for name, cost in monthly.items()}


def load_measured(path: Path | None) -> Measured:
    """Measured inputs from bench.calls' JSON if there is one, else the defaults (the source says which)."""
    candidate = path or MEASURED_PATH
    if not candidate.exists():
        if path is not None:
            raise FileNotFoundError(f"no measured inputs at {path}")
        return Measured()
    steps = json.loads(candidate.read_text())
    return Measured(
        create_s=float(steps["create"]["seconds"]),
        place_s=float(steps["place"]["seconds"]),
        apply_s=float(steps["apply one execution"]["seconds"]),
        source=str(candidate),
    )


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:,.2f}"


def print_step(rate: int, measured: Measured, design: Design) -> None:
    rows = limits(rate, measured, design)
    first = binding(rows)
    print(f"\n### {rate:,} orders/s ({rate * design.reports_per_order:,.0f} execution reports/s)\n")
    table = [
        [
            row.name,
            _number(row.demand),
            "contract" if row.capacity is None else _number(row.capacity),
            row.unit,
            "?" if row.use is None else f"{row.use:.2f}",
            row.lift,
        ]
        for row in rows
    ]
    print(markdown_table(["limit", "needs", "allows (as deployed)", "unit", "use", "what lifts it"], table))
    print(f"\nBinds first: **{first.name}** ({first.use:.2f}x of its capacity).")
    lifted = with_settings_lifted(rate, measured, design)
    after = binding(limits(rate, measured, lifted))
    print(
        f"With the settings lifted ({lifted.kinesis_shards} shards, ParallelizationFactor 10, "
        f"{lifted.pending_index_shards} sweep-index shards): **{after.name}** binds ({after.use:.2f}x)."
    )
    ramp = max(concurrency(rate, measured, design).values()) / LAMBDA_SCALE_PER_10S * 10
    print(f"Lambda scaling from zero to the largest function's concurrency: ~{ramp:.0f} s (1,000 per 10 s).")


def print_costs(measured: Measured, design: Design) -> None:
    per_step = {rate: costs_per_million(rate, measured, design) for rate in STEPS}
    names = list(per_step[STEPS[0]])
    rows = [[name] + [f"{per_step[rate][name]:.2f}" for rate in STEPS] for name in names]
    rows.append(["**total**"] + [f"**{sum(per_step[rate].values()):.2f}**" for rate in STEPS])
    print(f"\n### USD per million orders (us-east-1 list prices, {design.busy_hours_per_month:g} busy hours/month)\n")
    print(markdown_table(["service"] + [f"{rate:,}/s" for rate in STEPS], rows))


def print_inputs(measured: Measured, design: Design) -> None:
    print(f"Measured inputs: {measured.source}")
    units = dynamodb_units(design)
    rows = [
        ["create (authorizer + handler), s/order", f"{measured.create_s:.4f}"],
        ["placement handler without the exchange, s/order", f"{measured.place_s:.4f}"],
        ["apply one report, s/report", f"{measured.apply_s:.4f}"],
        ["exchange latency, s (one wait per batch)", f"{design.exchange_latency_s:g}"],
        ["execution reports per order", f"{design.reports_per_order:g}"],
    ] + [[f"DynamoDB {name}, units/order", f"{value:g}"] for name, value in units.items()]
    print(markdown_table(["input", "value"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measured", type=Path, help=f"bench.calls JSON (default: {MEASURED_PATH} if present)")
    parser.add_argument("--reports-per-order", type=float, default=Design.reports_per_order)
    parser.add_argument("--exchange-latency", type=float, default=Design.exchange_latency_s)
    parser.add_argument("--apply-seconds", type=float, help="override the measured seconds per applied report")
    args = parser.parse_args(argv)
    measured = load_measured(args.measured)
    if args.apply_seconds is not None:
        measured = replace(measured, apply_s=args.apply_seconds, source=f"{measured.source}, apply_s overridden")
    design = replace(Design(), reports_per_order=args.reports_per_order, exchange_latency_s=args.exchange_latency)
    print_inputs(measured, design)
    for rate in STEPS:
        print_step(rate, measured, design)
    print_costs(measured, design)
    return 0


if __name__ == "__main__":
    sys.exit(main())
