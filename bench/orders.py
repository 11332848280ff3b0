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
from bench.create import CREATE_HEADERS, FLOOR_PROCESSES, create_rows, create_summary, measure_level
from bench.placement import NO_SWEEP_S, PLACEMENT_HEADER, measure_placement, placement_lines
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
    creates, drains, limit = [], [], None
    with (
        tempfile.TemporaryDirectory() as tmp,
        (Path(tmp) / "stack.log").open("wb") as log,
        # The sweep held off for the whole run: it would re-send the create levels' pending
        # orders onto the orders queue, and the runner would place them while later figures are taken.
        local_stack(
            free_port(), free_port(), free_port(), schedule_interval_s=NO_SWEEP_S, overrides=overrides, log=log
        ) as stack,
    ):
        # This process's adapters (the floors, reading placed_at) point where the stack's do.
        os.environ.update(stack.env)
        print(f"Whole stack on moto server (in memory), all processes on 127.0.0.1; {date.today()}, `{command}`.")
        print(
            f"The pending-order sweep is held off (schedule interval {NO_SWEEP_S:.0f} s, longer than the run); "
            "the orders queue is purged before the placement backlog is posted."
        )
        if "create" in args.scenarios:
            levels = [int(level) for level in args.levels.split(",")]
            creates = [
                measure_level(stack, clients, max(args.create_count, 4 * clients), log, args.floor_processes)
                for clients in levels
            ]
            print("\n### Create: POST /orders through the stack beside the floor\n")
            print(markdown_table(CREATE_HEADERS, create_rows(creates)))
            print("\n" + "\n".join(create_summary(creates)))
        if "placement" in args.scenarios:
            figures = measure_placement(stack, args.backlog, args.probes, args.exchange_latency, BATCH_SIZE, Path(tmp))
            drains = [figures.drain, figures.floor]
            limit = figures.configured_pollers * BATCH_SIZE / args.exchange_latency
            print(f"\n### Placement from a backlog (batch {BATCH_SIZE}, exchange latency {args.exchange_latency} s)\n")
            print("\n".join(PLACEMENT_HEADER + placement_lines(figures, args.exchange_latency, BATCH_SIZE)))
    plot_stack(creates, drains, limit, args.plot)
    print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
