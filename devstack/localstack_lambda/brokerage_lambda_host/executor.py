"""LocalStack runtime executor that runs a deployed Python function as a host process instead of a container.

LocalStack community runs Lambda code only in Docker, which this project's
machines do not have. Its executor is a plugin (entry point group
`localstack.lambda.runtime_executor`, chosen by LAMBDA_RUNTIME_EXECUTOR):
this one, `host-python`, starts bootstrap.py beside this file, on this
interpreter in isolated mode without site-packages, in the unzipped
deployment package LocalStack took from the function's code. So what runs is
the deployed zip, with the dependencies bundled in it, and nothing of ours.

In a container, LocalStack's Go init enforces the function's timeout and
reports a runtime that dies; here the executor does both, or LocalStack would
wait 15 minutes for an answer that never comes.

Installed into LocalStack's own virtual environment by `make localstack-setup`
(this folder is a distribution of its own); loaded inside the LocalStack
process, so it may import localstack.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from localstack import config
from localstack.services.lambda_.invocation.executor_endpoint import ExecutorEndpoint, InvokeSendError
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin
from localstack.services.lambda_.invocation.runtime_executor import LambdaRuntimeException, RuntimeExecutor

from brokerage_lambda_host.command import BOOTSTRAP, runtime_command, runtime_environment

LOG = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
# The one runtime this executor can run: the interpreter LocalStack runs on.
HOST_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
STOP_GRACE_S = 5.0
# Past the function's timeout: the runtime's own answer may be on its way.
TIMEOUT_GRACE_S = 2.0
POLL_S = 0.1
WORK_ROOT = Path(tempfile.gettempdir()) / "lambda-host"


def check_runtime(function_version: FunctionVersion) -> None:
    runtime = function_version.config.runtime
    if runtime != HOST_RUNTIME:
        raise LambdaRuntimeException(
            f"{function_version.qualified_arn}: runtime {runtime!r} cannot run on the host executor, "
            f"which runs {HOST_RUNTIME} only (LocalStack's own interpreter)"
        )


def loopback_port() -> int:
    # LocalStack's get_free_tcp_port binds every interface, if only briefly.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class HostPythonRuntimeExecutor(RuntimeExecutor):  # type: ignore[misc]  # LocalStack is not typed here
    """One execution environment: one bootstrap process, one invocation at a time."""

    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.executor_endpoint = ExecutorEndpoint(self.id)
        self.process: subprocess.Popen[bytes] | None = None
        self.work_dir: Path = WORK_ROOT / str(self.id)
        self.log_path: Path = self.work_dir / "runtime.log"
        # stop() may come from LocalStack's startup-timeout thread while start() runs.
        self._lock = threading.Lock()
        self._stopped = False

    def start(self, env_vars: dict[str, Any]) -> None:
        check_runtime(self.function_version)
        code = Path(str(self.function_version.config.code.get_unzipped_code_location()))
        port = loopback_port()
        self.executor_endpoint.container_address = LOOPBACK
        self.executor_endpoint.container_port = port
        self.executor_endpoint.start()
        home = self.work_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._stopped:
                raise LambdaRuntimeException(f"execution environment {self.id} was stopped while starting")
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(  # noqa: S603 - our bootstrap, no shell
                    runtime_command(sys.executable, port, self.log_path, os.getpid()),
                    env=runtime_environment(env_vars, code, home),
                    cwd=code,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        threading.Thread(target=self._fail_startup_if_exited, name=f"watch-{self.id}", daemon=True).start()
        self.executor_endpoint.wait_for_startup()

    def _fail_startup_if_exited(self) -> None:
        """A process that dies before it reports would leave LocalStack waiting until its startup timeout."""
        future = self.executor_endpoint.startup_future
        while self.process is not None and future is not None and not future.done():
            if self.process.poll() is not None:
                with contextlib.suppress(Exception):  # it reported after all, or was shut down meanwhile
                    future.set_exception(
                        LambdaRuntimeException(f"runtime exited with {self.process.returncode}: {self.get_logs()}")
                    )
                return
            time.sleep(POLL_S)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(Exception):  # already unregistered
            self.executor_endpoint.shutdown()
        shutil.rmtree(self.work_dir / "home", ignore_errors=True)

    def get_address(self) -> str:
        return LOOPBACK

    def get_endpoint_from_executor(self) -> str:
        return LOOPBACK

    def get_runtime_endpoint(self) -> str:
        port = config.GATEWAY_LISTEN[0].port
        return f"http://{LOOPBACK}:{port}{self.executor_endpoint.get_endpoint_prefix()}"

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        """Send the invocation, then wait for its answer, the process's death or the function's timeout.

        ExecutorEndpoint.invoke would wait 905 s whatever happens; a raised
        error instead makes LocalStack fail this invocation (its caller, e.g.
        the SQS mapping, retries it) and replace the environment.
        """
        process = self.process
        if process is None or process.poll() is not None:
            raise LambdaRuntimeException(f"execution environment {self.id}: the runtime is not running")
        future: concurrent.futures.Future[InvocationResult] = concurrent.futures.Future()
        self.executor_endpoint.invocation_future = future
        self.executor_endpoint.logs = None
        url = f"http://{LOOPBACK}:{self.executor_endpoint.container_port}/invoke"
        response = requests.post(url, json=payload, proxies={"http": "", "https": ""}, timeout=10)
        if not response.ok:
            raise InvokeSendError(f"{url} answered {response.status_code} to invocation {payload.get('invoke-id')}")
        timeout_s = float(self.function_version.config.timeout)
        deadline = time.monotonic() + timeout_s + TIMEOUT_GRACE_S
        while True:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                return future.result(timeout=POLL_S)
            if process.poll() is not None:
                raise LambdaRuntimeException(
                    f"Runtime exited with {process.returncode} during invocation {payload.get('invoke-id')}"
                )
            if time.monotonic() > deadline:
                LOG.warning(
                    "%s: invocation %s timed out", self.function_version.qualified_arn, payload.get("invoke-id")
                )
                self.stop()
                raise LambdaRuntimeException(f"Task timed out after {timeout_s:.2f} seconds")

    def get_logs(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "no log: the runtime was not started"

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        check_runtime(function_version)
        if function_version.config.code:
            function_version.config.code.prepare_for_execution()  # unzips the package

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        pass  # nothing beyond LocalStack's own unzipped copy, which it removes itself

    @classmethod
    def validate_environment(cls) -> bool:
        # LocalStack only logs the answer: say what is wrong.
        if not os.access(BOOTSTRAP, os.R_OK):
            LOG.warning("host Lambda executor: cannot read %s; reinstall with make localstack-setup", BOOTSTRAP)
            return False
        return True


class HostPythonExecutorPlugin(RuntimeExecutorPlugin):  # type: ignore[misc]  # LocalStack is not typed here
    name = "host-python"

    def load(self, *args: Any, **kwargs: Any) -> type[RuntimeExecutor]:
        return HostPythonRuntimeExecutor
