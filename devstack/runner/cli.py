"""The runner's command line, `python -m devstack.runner`: options, signals, start, and a clean stop."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TypeVar

from chalice.app import Chalice

from devstack.lambda_context import DEFAULT_TIMEOUT_S
from devstack.runner.app_runner import Runner
from devstack.runner.options import DEFAULT_CHECKPOINT_TABLE, DEFAULT_STACK_NAME, RunnerOptions
from devstack.runner.settings import DEFAULT_EVENT_SOURCES_PATH, EventSourcesError, load_event_sources

# One logger for the whole runner, as before it was a package: log filters and lines stay the same.
log = logging.getLogger("devstack.runner")

# What --help says the command does (the runner's description before it became a package).
DESCRIPTION = (
    "Local stand-in for Lambda's event sources: feeds SQS messages, Kinesis and DynamoDB stream records and "
    "schedules to a Chalice app."
)
SCHEDULE_INTERVAL_ENV = "RUNNER_SCHEDULE_INTERVAL_S"
# Lets whoever starts the runner (the stack, a benchmark) cap the pollers for a small machine without a new flag.
MAX_SQS_CONCURRENCY_ENV = "RUNNER_MAX_SQS_CONCURRENCY"
N = TypeVar("N", int, float)


def load_app(spec: str) -> Chalice:
    """Import `module:attr` (default attr `app`) and check that it is a Chalice app."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `app.py` at the repo root, as `chalice local` finds it
    app = getattr(importlib.import_module(module_name), attr or "app")
    if not isinstance(app, Chalice):
        raise TypeError(f"{spec} is a {type(app).__name__}, not a Chalice app")
    return app


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """The command line, with defaults from `environ` (the process's environment unless given)."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m devstack.runner", description=DESCRIPTION)
    parser.add_argument("--app", default="app:app", help="import spec of the Chalice app (default app:app)")
    parser.add_argument(
        "--max-sqs-concurrency",
        "--sqs-concurrency",  # its name before the pollers scaled; now the same cap
        dest="max_sqs_concurrency",
        type=int,
        default=None,  # then from the environment, checked below so that an error names the variable
        metavar="N",
        help="at most N concurrent batches per SQS source (default: $RUNNER_MAX_SQS_CONCURRENCY, else the "
        "mapping's maximum concurrency, else Lambda's 1,000); pollers scale between 1 and this with the backlog",
    )
    parser.add_argument(
        "--schedule-interval",
        type=float,
        default=None,  # then from the environment, checked below so that an error names the variable
        help=f"seconds between firings of every schedule (default: from the expression, or ${SCHEDULE_INTERVAL_ENV})",
    )
    parser.add_argument(
        "--schedule-interval-of",
        action="append",
        default=[],
        metavar="HANDLER=SECONDS",
        help="seconds between firings of one schedule, by handler name (repeatable; before --schedule-interval)",
    )
    parser.add_argument("--function-timeout", type=float, default=DEFAULT_TIMEOUT_S, help="Lambda timeout, seconds")
    parser.add_argument("--stage", default="dev", help="Chalice stage used in function and rule names")
    parser.add_argument("--shutdown-grace", type=float, default=8.0, help="seconds to let in-flight work finish")
    parser.add_argument(
        "--event-sources",
        type=Path,
        default=DEFAULT_EVENT_SOURCES_PATH,
        metavar="PATH",
        help="event source mapping settings Chalice cannot express, by handler name (default infra/event_sources.json)",
    )
    parser.add_argument(
        "--stack-name",
        default=env.get("RESOURCE_PREFIX", DEFAULT_STACK_NAME),
        help="CloudFormation stack whose outputs name on-failure destinations (default $RESOURCE_PREFIX or "
        f"{DEFAULT_STACK_NAME})",
    )
    parser.add_argument(
        "--checkpoint-table",
        default=DEFAULT_CHECKPOINT_TABLE,
        help="DynamoDB table on the emulator holding Kinesis checkpoints, created if missing "
        f"(default {DEFAULT_CHECKPOINT_TABLE})",
    )
    parser.add_argument("--log-level", default=env.get("RUNNER_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if args.max_sqs_concurrency is not None:
        if args.max_sqs_concurrency < 1:
            parser.error("--max-sqs-concurrency must be at least 1")
    else:
        args.max_sqs_concurrency = _from_environment(parser, env, MAX_SQS_CONCURRENCY_ENV, int, "a whole number >= 1")
    if args.schedule_interval is not None:
        if args.schedule_interval <= 0:
            parser.error("--schedule-interval must be positive")
    else:
        args.schedule_interval = _from_environment(parser, env, SCHEDULE_INTERVAL_ENV, float, "a number of seconds > 0")
    args.schedule_intervals = _schedule_intervals(parser, args.schedule_interval_of)
    return args


def _schedule_intervals(parser: argparse.ArgumentParser, given: list[str]) -> dict[str, float]:
    intervals: dict[str, float] = {}
    for text in given:
        name, _, seconds = text.partition("=")
        try:
            interval = float(seconds)
        except ValueError:
            interval = 0.0
        if not name or interval <= 0:
            parser.error(f"--schedule-interval-of wants HANDLER=SECONDS with SECONDS > 0, got {text!r}")
        intervals[name] = interval
    return intervals


def _from_environment(
    parser: argparse.ArgumentParser, env: Mapping[str, str], name: str, convert: Callable[[str], N], wanted: str
) -> N | None:
    """A positive number from the environment variable `name`, None if unset; anything else is a usage error."""
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not value > 0:
        parser.error(f"${name} must be {wanted}, not {text!r}")  # exits with status 2
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
    )
    # botocore announces credentials and endpoints at INFO for every new client.
    logging.getLogger("botocore").setLevel(max(logging.getLogger().level, logging.WARNING))
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()
        # A second signal ends the process at once instead of waiting for in-flight work.
        signal.signal(signum, signal.SIG_DFL)

    # Installed before the app is imported so an early SIGTERM is still a clean stop.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        app = load_app(args.app)
    except Exception:
        log.exception("could not load the Chalice app %s", args.app)
        return 2
    try:
        runner = Runner(
            app,
            RunnerOptions(
                max_sqs_concurrency=args.max_sqs_concurrency,
                schedule_interval_s=args.schedule_interval,
                schedule_intervals=args.schedule_intervals,
                function_timeout_s=args.function_timeout,
                stage=args.stage,
                checkpoint_table=args.checkpoint_table,
                stack_name=args.stack_name,
            ),
            event_sources=load_event_sources(args.event_sources),
        )
        runner.workers  # noqa: B018 - builds them now, so invalid settings fail at start-up
    except EventSourcesError as exc:
        log.error("invalid event source settings: %s", exc)
        return 2
    runner.start()
    print("runner ready", flush=True)
    # Short waits rather than one long one: the main thread must get back to
    # the interpreter loop for the signal handler to run.
    while not stop_requested.wait(0.5):
        pass
    runner.stop(args.shutdown_grace)
    log.info("runner stopped")
    return 0
