"""Cold start of each Lambda function beside a bare `import boto3`, in fresh interpreters.

A function's cold start imports `app` (every function's handler is an
attribute of app.py) and then whatever its first invocation imports lazily.
The functions are every one `chalice package` makes of app.py, each with its
canned first event (bench/cold_start_events.py). So for each function, once:
a fresh interpreter imports app, invokes the function's handler with its
event against nothing (AWS, the exchange and the WebSocket management API
point at a closed loopback port: connection refused, no network, no wait) and
lists the modules that invocation imported. Then, --runs times, interleaved with
`import boto3`: a fresh interpreter times `import app` plus those modules;
the median is the function's import time, wall-clock and CPU (the machine
may be shared: other processes' load stretches wall-clock times, hardly CPU
times, so both are shown with the load average). The invocation itself
(clients created, calls refused) is timed too, as "first call", for
information only: it is not an import and has no target.

Two environments: "lambda" is the deployed one (LAMBDA_TASK_ROOT set, so
Powertools' Tracer traces with the X-Ray SDK, as the stages' "xray": true
asks); "local" is the local stack's (outside Lambda: tracing off).
`-X importtime` profiles say where each function's time goes (top self times).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cold_start_events import first_invocations
from bench.common import markdown_table

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.5  # issue 13: every function's import <= 1.5 x `import boto3`
PROBE_MARK = "COLD-START-PROBE "  # the probe's result line, among the function's own log lines
# What the variables describing where a process runs are, per environment; the
# bench removes them all from its children's environment first.
PLACEMENT_VARIABLES = ("LAMBDA_TASK_ROOT", "AWS_LAMBDA_FUNCTION_NAME", "_X_AMZN_TRACE_ID", "POWERTOOLS_TRACE_DISABLED")

# One import, timed from before it to after it: wall-clock and the process's
# CPU time. Nothing is imported before `started` but what the interpreter has
# at startup.
IMPORT_PROBE = """
import time
started, cpu_started = time.perf_counter(), time.process_time()
{statement}
for name in {lazy!r}:
    try:
        __import__(name)
    except ImportError:
        pass  # a name a package put in sys.modules itself, not an importable module
print(time.perf_counter() - started, time.process_time() - cpu_started)
"""

# Import app, invoke one handler once, then make the AWS clients the rest of
# its path would use (a call refused early never gets to the queue's): list
# the modules all that imported.
FIRST_CALL_PROBE = """
import json, sys, time
started = time.perf_counter()
import app
imported = time.perf_counter()
from devstack.lambda_context import FunctionSpec
probe = json.loads(sys.argv[1])
handler = getattr(app, probe["handler"])
context = FunctionSpec(probe["function"], region="us-east-1").new_context()
before = set(sys.modules)
called_at = time.perf_counter()
try:
    result = handler(probe["event"], context)
    if isinstance(result, dict) and "statusCode" in result:
        outcome = "HTTP " + str(result["statusCode"])
    elif isinstance(result, dict) and "batchItemFailures" in result:
        outcome = str(len(result["batchItemFailures"])) + " batch item failure(s)"
    else:
        outcome = "returned " + type(result).__name__
except Exception as exc:
    outcome = "raised " + type(exc).__name__
from chalicelib import bootstrap
for adapter in probe["adapters"]:
    target = bootstrap.production()
    for part in adapter.split("."):  # "stream.pusher": Dependencies.stream.pusher
        target = getattr(target, part)
    target.client
done = time.perf_counter()
lazy = [name for name in sys.modules if name not in before]
print({mark!r} + json.dumps({{"import_s": imported - started, "call_s": done - called_at, "lazy": lazy,
    "outcome": outcome}}))
"""


@dataclass
class Timings:
    """Seconds per run: wall-clock, and CPU time (what load from other processes on the machine barely moves)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, probe_output: str) -> None:
        wall, cpu = probe_output.strip().splitlines()[-1].split()
        self.wall.append(float(wall))
        self.cpu.append(float(cpu))


@dataclass
class Function:
    """One deployed function, as Chalice names it: its handler attribute of app.py and a canned first event."""

    name: str
    handler: str
    event: dict[str, Any]
    # The Dependencies fields (dotted for nested ones: "stream.pusher") whose AWS clients the
    # function's path uses (the probe creates them, since against nothing the path stops at the first call).
    adapters: tuple[str, ...]
    # Per environment ("lambda", "local"): what the first call imported and how it ended, the timings.
    lazy: dict[str, list[str]] = field(default_factory=dict)
    outcome: dict[str, str] = field(default_factory=dict)
    imports: dict[str, Timings] = field(default_factory=dict)
    first_call_s: dict[str, list[float]] = field(default_factory=dict)


def functions() -> list[Function]:
    """Every function Chalice packages of app.py, each with the event its usual first invocation gets."""
    return [Function(*invocation) for invocation in first_invocations()]


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released): connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(mode: str, function: str, port: int) -> dict[str, str]:
    """The child's environment: AWS and the exchange at a closed port, tracing as in `mode`."""
    env = {name: value for name, value in os.environ.items() if name not in PLACEMENT_VARIABLES}
    nowhere = f"http://127.0.0.1:{port}"
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "AWS_ENDPOINT_URL": nowhere,
            "EXCHANGE_URL": nowhere,
            "STREAM_MANAGEMENT_URL": nowhere,  # API Gateway's management API (the WebSocket pushes)
            "AWS_ACCESS_KEY_ID": "cold-start-bench",
            "AWS_SECRET_ACCESS_KEY": "cold-start-bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # no credential look-up on 169.254.169.254
            "AWS_MAX_ATTEMPTS": "1",
            "POWERTOOLS_METRICS_NAMESPACE": "Brokerage",
        }
    )
    if mode == "lambda":
        env.update(
            {
                "LAMBDA_TASK_ROOT": str(REPO_ROOT),
                "AWS_LAMBDA_FUNCTION_NAME": function,
                # A sampled trace, as Lambda sets it with active tracing: subsegments go to the
                # X-Ray daemon's UDP port on loopback, where nobody listens (UDP does not wait).
                "_X_AMZN_TRACE_ID": "Root=1-674c8a00-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=1",
            }
        )
    return env


def run_probe(code: str, env: Mapping[str, str], app_root: Path, args: Sequence[str] = (), *flags: str) -> str:
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, *flags, "-c", code, *args],
        cwd=app_root,
        env={**env, "PYTHONPATH": f"{app_root}{os.pathsep}{REPO_ROOT}"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"probe failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout if not flags else result.stderr


def first_call(function: Function, env: Mapping[str, str], app_root: Path) -> dict[str, Any]:
    probe = {"handler": function.handler, "function": function.name, "event": function.event}
    probe["adapters"] = list(function.adapters)
    output = run_probe(FIRST_CALL_PROBE.format(mark=PROBE_MARK), env, app_root, [json.dumps(probe)])
    line = next(line for line in reversed(output.splitlines()) if line.startswith(PROBE_MARK))
    result: dict[str, Any] = json.loads(line.removeprefix(PROBE_MARK))
    return result


def import_probe(statement: str, lazy: Sequence[str]) -> str:
    return IMPORT_PROBE.format(statement=statement, lazy=list(lazy))


def self_times(importtime_log: str, top: int) -> list[tuple[float, float, str]]:
    """The `-X importtime` lines with the largest self time: (self ms, cumulative ms, module)."""
    rows = []
    for line in importtime_log.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, module = line.removeprefix("import time:").split("|")
        rows.append((int(self_us) / 1000, int(cumulative_us) / 1000, module.strip()))
    return sorted(rows, reverse=True)[:top]


def discover(functions_: Sequence[Function], mode: str, port: int, runs: int, app_root: Path) -> None:
    """Each function's first call, `runs` times: the modules it imports, how it ends, import + call time."""
    for function in functions_:
        calls = [first_call(function, environment(mode, function.name, port), app_root) for _ in range(runs)]
        # The last run's list: the first one also compiled bytecode, which changes nothing imported.
        function.lazy[mode], function.outcome[mode] = calls[-1]["lazy"], calls[-1]["outcome"]
        function.first_call_s[mode] = [call["import_s"] + call["call_s"] for call in calls]


def time_imports(functions_: Sequence[Function], mode: str, port: int, runs: int, app_root: Path) -> Timings:
    """Each function's import (app + its first call's modules) `runs` times; returns `import boto3`'s."""
    boto3 = Timings()
    probes: list[tuple[Timings, str, str]] = [(boto3, import_probe("import boto3", ()), "boto3")]
    for function in functions_:
        function.imports[mode] = Timings()
        probes.append((function.imports[mode], import_probe("import app", function.lazy[mode]), function.name))
    for run in range(runs):
        # Interleaved, in a rotating order: load from other processes falls on all of them alike.
        shift = run % len(probes)
        for timings, code, name in probes[shift:] + probes[:shift]:
            timings.add(run_probe(code, environment(mode, name, port), app_root))
    return boto3


def profile(function: Function, mode: str, port: int, app_root: Path, top: int) -> list[tuple[float, float, str]]:
    code = import_probe("import app", function.lazy[mode])
    return self_times(run_probe(code, environment(mode, function.name, port), app_root, (), "-X", "importtime"), top)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def verdict(ratio: float, excess_s: float) -> str:
    return "yes" if ratio <= TARGET_RATIO else f"no (+{ms(excess_s)} ms)"


def report(functions_: Sequence[Function], mode: str, boto3: Timings) -> str:
    boto3_wall, boto3_cpu = statistics.median(boto3.wall), statistics.median(boto3.cpu)
    rows: list[list[Any]] = [["(import boto3)", ms(boto3_wall), "1.00", ms(boto3_cpu), "1.00", "", "", "", ""]]
    for function in functions_:
        wall, cpu = statistics.median(function.imports[mode].wall), statistics.median(function.imports[mode].cpu)
        rows.append(
            [
                function.name,
                ms(wall),
                f"{wall / boto3_wall:.2f}",
                ms(cpu),
                f"{cpu / boto3_cpu:.2f}",
                verdict(wall / boto3_wall, wall - TARGET_RATIO * boto3_wall)
                + " / "
                + verdict(cpu / boto3_cpu, cpu - TARGET_RATIO * boto3_cpu),
                len(function.lazy[mode]),
                ms(statistics.median(function.first_call_s[mode])),
                function.outcome[mode],
            ]
        )
    headers = [
        "function",
        "import ms",
        "x boto3",
        "import CPU ms",
        "x boto3 (CPU)",
        f"<= {TARGET_RATIO}x (wall / CPU)",
        "modules its first call imports",
        "import + first call ms",
        "first call against nothing",
    ]
    return markdown_table(headers, rows)


def _load_average() -> str:
    # Other processes on the machine stretch wall-clock times; the CPU columns barely move.
    return " ".join(f"{load:.1f}" for load in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="timed imports per function and environment")
    parser.add_argument("--first-call-runs", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=("lambda", "local"), default=["lambda", "local"])
    parser.add_argument("--functions", nargs="+", help="only these functions (default: all)")
    parser.add_argument("--top", type=int, default=8, help="largest self-time imports shown per function")
    parser.add_argument("--app-root", type=Path, default=REPO_ROOT, help="the tree whose app.py to measure")
    args = parser.parse_args(argv)
    selected = [f for f in functions() if not args.functions or f.name in args.functions]
    port = closed_port()
    for mode in args.modes:
        load_before = _load_average()
        discover(selected, mode, port, args.first_call_runs, args.app_root)
        boto3 = time_imports(selected, mode, port, args.runs, args.app_root)
        tracing = "tracing on, as deployed" if mode == "lambda" else "tracing off, as the local stack runs"
        print(f"\n## {mode} ({tracing}): medians of {args.runs} fresh interpreters\n")
        print(f"load average before / after: {load_before} / {_load_average()}\n")
        print(report(selected, mode, boto3))
        for function in selected:
            print(f"\n{mode} / {function.name}: largest self times (-X importtime, ms self / cumulative)")
            for self_ms, cumulative_ms, module in profile(function, mode, port, args.app_root, args.top):
                print(f"  {self_ms:7.1f} {cumulative_ms:7.1f}  {module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
