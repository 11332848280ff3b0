"""Cold start: import time of the handler module beside a bare `import boto3`, in fresh interpreters."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import markdown_table

REPO_ROOT = Path(__file__).resolve().parent.parent


def import_seconds(statement: str, runs: int) -> list[float]:
    timings = []
    probe = "import time; t = time.perf_counter(); " + statement + "; print(time.perf_counter() - t)"
    for _ in range(runs):
        out = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        )
        timings.append(float(out.stdout.strip().splitlines()[-1]))
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    # Interleaved would be fairer still; alternating blocks keep it simple and
    # the medians of 15 fresh processes are stable enough for a ratio.
    boto3_times = import_seconds("import boto3", args.runs)
    app_times = import_seconds("import app", args.runs)
    boto3_median, app_median = statistics.median(boto3_times), statistics.median(app_times)
    print(
        markdown_table(
            ["import", "median ms", "min ms", "runs"],
            [
                ["import boto3", f"{boto3_median * 1000:.0f}", f"{min(boto3_times) * 1000:.0f}", args.runs],
                ["import app (all handlers)", f"{app_median * 1000:.0f}", f"{min(app_times) * 1000:.0f}", args.runs],
            ],
        )
    )
    print(f"\nhandler module / boto3 import time = {app_median / boto3_median:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
