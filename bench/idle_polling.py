"""What an idle runner costs the emulator: requests per second by action, and CPU seconds of moto and the runner.

`python -m bench.idle_polling --seconds 30 [-- runner options]` starts a
moto server of its own with moto's request recorder on, provisions the
project's stack, starts the runner on `app:app` as `make run` does (sweep every
10 s), lets it settle, then counts for the given seconds. Nothing is sent, so
every request it counts is polling. The recorder's file append adds a little to
moto's CPU per request; the figures are an upper bound. Both processes are
stopped on the way out, on an error or SIGTERM too (and die with this process
if it is killed outright: ManagedProcess).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from chalicelib.stack_outputs import settings_environment
from devstack.emulator import emulator_client, emulator_env
from devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module
from devstack.provision import provision

REPO_ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def action_of(entry: dict[str, object]) -> str:
    """`service.Action` of a recorded request: JSON protocols name it in X-Amz-Target, query ones in the body."""
    headers = {str(k).lower(): str(v) for k, v in dict(entry.get("headers") or {}).items()}  # type: ignore[call-overload]
    target = headers.get("x-amz-target")
    if target:
        return target
    body = str(entry.get("body") or "")
    for part in body.split("&"):
        if part.startswith("Action="):
            return part.removeprefix("Action=")
    return f"{entry.get('method')} {entry.get('url')}"


def count_actions(recording: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    if recording.exists():
        for line in recording.read_text().splitlines():
            if line.strip():
                counts[action_of(json.loads(line))] += 1
    return counts


def measure(seconds: float, settle_s: float, runner_args: Sequence[str], workdir: Path) -> None:
    recording = workdir / "moto_recording"
    port = free_port()
    moto_env = {**os.environ, "MOTO_ENABLE_RECORDING": "1", "MOTO_RECORDER_FILEPATH": str(recording)}
    moto = ManagedProcess(
        "moto",
        python_module("devstack.moto_server", "-H", LOOPBACK, "-p", str(port)),
        env=moto_env,
        ready_url=f"http://{LOOPBACK}:{port}/moto-api/",
        stdout=subprocess.DEVNULL,
    )
    endpoint = f"http://{LOOPBACK}:{port}"
    with moto:
        outputs = provision(endpoint, cloudformation_client=emulator_client("cloudformation", endpoint))
        env = {
            **os.environ,
            **emulator_env(endpoint),
            **settings_environment(outputs),
            "EXCHANGE_URL": f"http://{LOOPBACK}:{free_port()}",  # never called: nothing is placed
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
        argv = python_module(
            "devstack.runner", "--app", "app:app", "--stage", "local", "--schedule-interval", "10", *runner_args
        )
        with (
            (workdir / "runner.log").open("wb") as log,
            ManagedProcess("runner", argv, env=env, cwd=str(REPO_ROOT), stdout=log) as runner,
        ):
            time.sleep(settle_s)  # start-up calls (GetQueueUrl, leases, CreateTable) are not idling
            recording.write_text("")
            moto_before, runner_before = cpu_seconds(moto.pid), cpu_seconds(runner.pid)
            time.sleep(seconds)
            moto_cpu, runner_cpu = cpu_seconds(moto.pid) - moto_before, cpu_seconds(runner.pid) - runner_before
            counts = count_actions(recording)
            if not runner.alive():  # a runner that died mid-count would make a quiet stack look cheap
                raise SystemExit(f"the runner exited during the count:\n{(workdir / 'runner.log').read_text()[-2000:]}")
    total = sum(counts.values())
    print(f"idle for {seconds:.0f} s, runner options {list(runner_args) or 'default'}")
    print(f"{'action':<45} {'requests':>9} {'per s':>7}")
    for action, count in counts.most_common():
        print(f"{action:<45} {count:>9} {count / seconds:>7.2f}")
    print(f"{'total':<45} {total:>9} {total / seconds:>7.2f}")
    print(f"moto CPU {moto_cpu / seconds:.1%} of a core, runner CPU {runner_cpu / seconds:.1%} of a core")


def stop_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # An exception rather than the default death, so that the with-blocks above stop moto and the runner.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    parser = argparse.ArgumentParser(prog="python -m bench.idle_polling", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to count")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds after start before counting")
    parser.add_argument("runner_args", nargs="*", help="options passed to the runner (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idle-polling-") as workdir:
        measure(args.seconds, args.settle, args.runner_args, Path(workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
