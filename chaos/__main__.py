"""`python -m chaos`: run the chaos scenarios, each on its own local stack, and print their figures as markdown."""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from chaos.config import FULL, SMALL, RunContext
from chaos.results import Result, markdown_table
from chaos.scenarios import SCENARIO_NAMES, SCENARIOS, new_seed, run_scenario
from devstack.stack import REPO_ROOT

# Enough lines to start a bug report with; the rest is in the scenario's log and --report.
PROBLEMS_SHOWN = 20


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description=__doc__,
        epilog="Scenarios: " + "; ".join(f"{s.name}: {s.summary}" for s in SCENARIOS),
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIO_NAMES,
        help="run only this scenario (repeatable; default: all, in the order listed below)",
    )
    parser.add_argument("--small", action="store_true", help="the small sizes `make test` uses")
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of the random choices: orders, fault moments, the simulator's draws (default: new, printed)",
    )
    parser.add_argument(
        "--log-dir", type=Path, help="where each scenario's stack log goes (default .local/chaos/<time>/)"
    )
    parser.add_argument("--report", type=Path, help="also write the markdown report to this file")
    return parser.parse_args(argv)


def crashed(name: str, seed: int, log_dir: Path, started: float, exc: BaseException) -> Result:
    """A scenario that could not finish: reported as such, and the run goes on with the next one."""
    return Result(
        scenario=name,
        orders=0,
        faults="-",
        drain_s=None,
        run_s=time.monotonic() - started,
        outcome=f"scenario crashed: {type(exc).__name__}: {exc}",
        seed=seed,
        log_path=log_dir / f"{name}.log",
        mismatched=[f"scenario crashed: {type(exc).__name__}: {exc}"],
    )


def report(results: Sequence[Result], argv: Sequence[str], seed: int, small: bool, seconds: float) -> str:
    command = shlex.join(["python", "-m", "chaos", *argv])
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"`{command}` ({'small' if small else 'full'} sizes, seed {seed}), {today}, {seconds / 60:.1f} min in all;",
        f"AWS emulator: moto {version('moto')} server; Python {platform.python_version()}.",
        "",
        markdown_table(results),
    ]
    for result in results:
        problems = result.problems()
        if problems:
            lines += ["", f"**{result.scenario}**: {len(problems)} problems (log: {result.log_path})", ""]
            lines += [f"- {line}" for line in problems[:PROBLEMS_SHOWN]]
            if len(problems) > PROBLEMS_SHOWN:
                lines.append(f"- ... and {len(problems) - PROBLEMS_SHOWN} more")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    seed = new_seed() if args.seed is None else args.seed
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = args.log_dir or REPO_ROOT / ".local" / "chaos" / stamp
    config = SMALL if args.small else FULL
    names = args.scenario or list(SCENARIO_NAMES)
    print(f"chaos: seed {seed}, logs in {log_dir}", file=sys.stderr, flush=True)
    started = time.monotonic()
    results: list[Result] = []
    for name in names:
        scenario_started = time.monotonic()
        try:
            results.append(run_scenario(name, config, RunContext(seed=seed, log_dir=log_dir)))
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            results.append(crashed(name, seed, log_dir, scenario_started, exc))
    text = report(results, raw_argv, seed, args.small, time.monotonic() - started)
    print(text, flush=True)
    if args.report:
        args.report.write_text(text, encoding="utf-8")
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
