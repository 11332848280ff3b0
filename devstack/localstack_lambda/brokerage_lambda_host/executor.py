"""LocalStack runtime executor that runs a deployed Python function as a host process instead of a container.

LocalStack community runs Lambda code only in Docker, which this project's
machines do not have. Its executor is a plugin (entry point group
`localstack.lambda.runtime_executor`, chosen by LAMBDA_RUNTIME_EXECUTOR):
this one, `host-python`, starts bootstrap.py beside this file, on this
interpreter in isolated mode without site-packages, in the unzipped
deployment package LocalStack took from the function's code. So what runs is
the deployed zip, with the dependencies bundled in it, and nothing of ours.

Installed into LocalStack's own virtual environment by `make localstack-setup`
(this folder is a distribution of its own); loaded inside the LocalStack
process, so it may import localstack.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from localstack import config
from localstack.services.lambda_.invocation.executor_endpoint import ExecutorEndpoint
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin
from localstack.services.lambda_.invocation.runtime_executor import LambdaRuntimeException, RuntimeExecutor
from localstack.utils.net import get_free_tcp_port

LOOPBACK = "127.0.0.1"
BOOTSTRAP = Path(__file__).resolve().parent / "bootstrap.py"
# The one runtime this executor can run: the interpreter LocalStack runs on.
HOST_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
STOP_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when LocalStack dies, so no runtime outlives a killed LocalStack (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def check_runtime(function_version: FunctionVersion) -> None:
    runtime = function_version.config.runtime
    if runtime != HOST_RUNTIME:
        raise LambdaRuntimeException(
            f"{function_version.qualified_arn}: runtime {runtime!r} cannot run on the host executor, "
            f"which runs {HOST_RUNTIME} only (LocalStack's own interpreter)"
        )


class HostPythonRuntimeExecutor(RuntimeExecutor):  # type: ignore[misc]  # LocalStack is not typed here
    """One execution environment: one bootstrap process, one invocation at a time."""

    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.executor_endpoint = ExecutorEndpoint(self.id)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.gettempdir()) / "lambda-host" / f"{self.id}.log"

    def start(self, env_vars: dict[str, Any]) -> None:
        check_runtime(self.function_version)
        code = Path(str(self.function_version.config.code.get_unzipped_code_location()))
        port = get_free_tcp_port()
        self.executor_endpoint.container_address = LOOPBACK
        self.executor_endpoint.container_port = port
        self.executor_endpoint.start()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            # Only what the Lambda runtime itself would set, never LocalStack's own environment.
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": tempfile.gettempdir(),
            **{key: str(value) for key, value in env_vars.items()},
            "LAMBDA_TASK_ROOT": str(code),
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our bootstrap, no shell
                [sys.executable, "-I", "-S", "-u", str(BOOTSTRAP), "--port", str(port), "--log", str(self.log_path)],
                env=env,
                cwd=code,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl, before exec
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
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(Exception):  # already unregistered
            self.executor_endpoint.shutdown()

    def get_address(self) -> str:
        return LOOPBACK

    def get_endpoint_from_executor(self) -> str:
        return LOOPBACK

    def get_runtime_endpoint(self) -> str:
        port = config.GATEWAY_LISTEN[0].port
        return f"http://{LOOPBACK}:{port}{self.executor_endpoint.get_endpoint_prefix()}"

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        return self.executor_endpoint.invoke(payload)

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
        return os.access(BOOTSTRAP, os.R_OK)


class HostPythonExecutorPlugin(RuntimeExecutorPlugin):  # type: ignore[misc]  # LocalStack is not typed here
    name = "host-python"

    def load(self, *args: Any, **kwargs: Any) -> type[RuntimeExecutor]:
        return HostPythonRuntimeExecutor
