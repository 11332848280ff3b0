"""The whole stack under load (`make run`'s processes): create by concurrent HTTP clients beside the floor of the
same AWS calls; a backlog drained by the runner beside its limit and floor; POST -> placed latency; one plot.

Scenarios: `--scenarios create,placement` (default both); `--quick` is a short
run of both. Figures go to stdout as markdown, the plot to --plot.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import date
from pathlib import Path

from bench.common import markdown_table
from bench.cpu_profile import CpuProfiler, EmulatorRecorder, cpu_table
from bench.create import CREATE_HEADERS, FLOOR_PROCESSES, LoadResult, create_rows, create_summary, measure_level
from bench.placement import NO_SWEEP_S, PLACEMENT_HEADER, Drain, measure_placement, placement_lines, profile_lines
from bench.plots import plot_stack
from devstack.processes import free_port
from devstack.runner.cli import MAX_SQS_CONCURRENCY_ENV
from devstack.stack import local_stack

BATCH_SIZE = 10  # the placement handler's batch size (chalicelib/config.py placement_batch_size)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run: fewer requests and a small backlog")
    parser.add_argument("--scenarios", default="create,placement", help="comma-separated: create, placement")
    parser.add_argument("--levels", default="1,4,16,64", help="client counts of the create scenario")
    parser.add_argument("--create-count", type=int, help="POSTs per level (default 600, quick 160)")
    parser.add_argument("--backlog", type=int, help="orders in the backlog drained (default 1000, quick 200)")
    parser.add_argument("--probes", type=int, help="orders timed POST -> placed, each way (default 30, quick 10)")
    parser.add_argument("--exchange-latency", type=float, default=0.5, help="the simulator's latency, seconds")
    parser.add_argument(
        "--max-sqs-concurrency",
        type=int,
        help=f"cap the runner's placement batches at once (${MAX_SQS_CONCURRENCY_ENV}; default: the mapping's)",
    )
    parser.add_argument(
        "--floor-processes", type=int, default=FLOOR_PROCESSES, help="processes the create floor's clients run in"
    )
    parser.add_argument(
        "--no-record-calls",
        dest="record_calls",
        action="store_false",
        help="skip the placement drain run a second time with moto's request recorder on",
    )
    parser.add_argument("--plot", type=Path, default=Path("docs/bench-stack.png"))
    args = parser.parse_args(argv)
    args.create_count = args.create_count or (160 if args.quick else 600)
    args.backlog = args.backlog or (200 if args.quick else 1000)
    args.probes = args.probes or (10 if args.quick else 30)
    args.scenarios = {name.strip() for name in args.scenarios.split(",") if name.strip()}
    unknown = args.scenarios - {"create", "placement"}
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m bench.orders" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    overrides = {
        "RESOURCE_PREFIX": "bench-orders",
        "EXCHANGE_FAILURE_RATE": "0",
        "EXCHANGE_LATENCY_S": str(args.exchange_latency),
    }
    if args.max_sqs_concurrency:
        overrides[MAX_SQS_CONCURRENCY_ENV] = str(args.max_sqs_concurrency)
    with tempfile.TemporaryDirectory() as tmp:
        # The stack's moto inherits this environment: its recorder writes here, and only between the
        # recorder's start and stop calls (MOTO_ENABLE_RECORDING unset: it costs nothing elsewhere).
        os.environ["MOTO_RECORDER_FILEPATH"] = str(Path(tmp) / "moto_recording")
        creates, drains, limit = run_scenarios(args, command, overrides, Path(tmp))
    plot_stack(creates, drains, limit, args.plot)
    print(f"\nplot: {args.plot}")
    return 0


def run_scenarios(
    args: argparse.Namespace, command: str, overrides: dict[str, str], tmp: Path
) -> tuple[list[tuple[LoadResult, LoadResult]], list[Drain], float | None]:
    """Start the stack, run the chosen scenarios, print their figures; what the plot needs."""
    creates: list[tuple[LoadResult, LoadResult]] = []
    drains: list[Drain] = []
    limit = None
    with (
        (tmp / "stack.log").open("wb") as log,
        # The sweep held off for the whole run: it would re-send the create levels' pending
        # orders onto the orders queue, and the runner would place them while later figures are taken.
        local_stack(
            free_port(), free_port(), free_port(), schedule_interval_s=NO_SWEEP_S, overrides=overrides, log=log
        ) as stack,
    ):
        # This process's adapters (the floors, reading placed_at) point where the stack's do.
        os.environ.update(stack.env)
        profiler = CpuProfiler(lambda: {p.pid: p.name for p in stack.processes if p.alive()})
        recording = Path(os.environ["MOTO_RECORDER_FILEPATH"])
        recorder = EmulatorRecorder(stack.endpoint_url, recording) if args.record_calls else None
        print(f"Whole stack on moto server (in memory), all processes on 127.0.0.1; {date.today()}, `{command}`.")
        print(
            f"The pending-order sweep is held off (schedule interval {NO_SWEEP_S:.0f} s, longer than the run); "
            "the orders queue is purged before the placement backlog is posted."
        )
        if "create" in args.scenarios:
            levels = [int(level) for level in args.levels.split(",")]
            creates = [
                measure_level(stack, clients, max(args.create_count, 4 * clients), log, profiler, args.floor_processes)
                for clients in levels
            ]
            print("\n### Create: POST /orders through the stack beside the floor\n")
            print(markdown_table(CREATE_HEADERS, create_rows(creates)))
            print("\n" + "\n".join(create_summary(creates)))
            print("\nCPU per process in each window: % of one core · ms per order (2 cores = 200%)\n")
            print("\n".join(cpu_table(list(profiler.windows))))
            profiler.windows.clear()
        if "placement" in args.scenarios:
            figures = measure_placement(
                stack, args.backlog, args.probes, args.exchange_latency, BATCH_SIZE, tmp, profiler, recorder
            )
            drains = [figures.drain, figures.floor]
            limit = figures.configured_pollers * BATCH_SIZE / args.exchange_latency
            print(f"\n### Placement from a backlog (batch {BATCH_SIZE}, exchange latency {args.exchange_latency} s)\n")
            print("\n".join(PLACEMENT_HEADER + placement_lines(figures, args.exchange_latency, BATCH_SIZE)))
            print("\n#### Where the drain's time goes\n")
            print("\n".join(profile_lines(figures, args.exchange_latency, BATCH_SIZE)))
    return creates, drains, limit


if __name__ == "__main__":
    sys.exit(main())
