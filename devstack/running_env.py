"""The environment that points our code at the running `make run` stack, e.g. for plain `chalice local`.

`make run` starts moto on a free port and names the resources with a prefix,
both written to .local/running-stack.json; app.py reads table and queue names
and the endpoint from the environment only. So that `chalice local` (or any
tool) reaches that stack's emulator and tables:

    eval "$(.venv/bin/python -m devstack.running_env)"     # exports, for this shell
    .venv/bin/python -m devstack.running_env -- .venv/bin/chalice local --stage local --port 8010   # or for one command
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.stack_outputs import settings_environment
from devstack.emulator import emulator_client, emulator_env
from devstack.stack import RUNNING_STACK_FILE, STREAM_MANAGEMENT_URL_VARIABLE
from ops.target import LOCAL_STAGE, Target


class NoRunningStack(Exception):
    """No running stack is described where we looked."""


def running_stack_environment(stack_file: Path = RUNNING_STACK_FILE) -> dict[str, str]:
    """Settings, endpoint and the emulator's fake credentials of the stack that wrote stack_file."""
    try:
        running = json.loads(stack_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NoRunningStack(f"{stack_file} does not exist: start the stack with `make run` first") from None
    target = Target(LOCAL_STAGE, running["resource_prefix"], running["endpoint_url"])
    # The stack's own outputs where the emulator has them: some (the orders table's stream ARN)
    # cannot be derived from the prefix.
    outputs = {**target.stack_outputs(), **_stack_outputs(running["endpoint_url"], running["resource_prefix"])}
    environment = {
        **settings_environment(outputs),
        # The fake credentials always: a real ~/.aws profile must never reach a local endpoint.
        **emulator_env(running["endpoint_url"]),
        # EMF metrics are for CloudWatch; in a terminal they only bury the log lines (as under `make run`).
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    if running.get("stream_management_url"):
        # Where pushes to the stack's WebSocket clients go (a stack file of an older `make run` has none).
        environment[STREAM_MANAGEMENT_URL_VARIABLE] = running["stream_management_url"]
    return environment


def _stack_outputs(endpoint_url: str, stack_name: str) -> dict[str, str]:
    """The outputs of the stack `make run` provisioned (named after its prefix); none if it cannot be read."""
    try:
        stacks = emulator_client("cloudformation", endpoint_url).describe_stacks(StackName=stack_name)["Stacks"]
    except (BotoCoreError, ClientError):
        return {}
    return {str(o["OutputKey"]): str(o["OutputValue"]) for stack in stacks for o in stack.get("Outputs", [])}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.running_env", description=__doc__.splitlines()[0])
    parser.add_argument("--stack-file", type=Path, default=RUNNING_STACK_FILE, help="what `make run` wrote")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...: run it with the environment")
    args = parser.parse_args(argv)
    try:
        environment = running_stack_environment(args.stack_file)
    except NoRunningStack as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        for name, value in environment.items():
            print(f"export {name}={shlex.quote(value)}")
        return 0
    # Replace this process: signals and the exit status are the command's own.
    os.execvpe(command[0], command, {**os.environ, **environment})  # noqa: S606 - the caller's own command, no shell


if __name__ == "__main__":
    sys.exit(main())
