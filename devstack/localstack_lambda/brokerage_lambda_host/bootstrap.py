"""A Lambda Python runtime for one execution environment, as a host process (standard library only).

LocalStack's host executor (executor.py beside this file) starts it as
command.py says (`python3.11 -I -S -B -u bootstrap.py --port P --log FILE
--parent-pid PID`) in the unzipped deployment package: no site-packages, no
PYTHON* variables, so the function sees only the package's own files and its
bundled dependencies, as on Lambda.

It speaks LocalStack's executor protocol (the one its Go init speaks in a
Lambda container, localstack/services/lambda_/invocation/executor_endpoint.py):

- imports the handler (`_HANDLER`, e.g. `app.place_orders`), then POSTs
  `<LOCALSTACK_RUNTIME_ENDPOINT>/status/<LOCALSTACK_RUNTIME_ID>/ready`, or
  `.../error` with the import error;
- takes invocations as `POST /invoke` on 127.0.0.1:P
  (`{"invoke-id", "invoked-function-arn", "payload", "trace-id"}`) and runs
  them one at a time, as Lambda runs one invocation per environment;
- POSTs the invocation's log lines to `.../invocations/<id>/logs`, then the
  result to `.../invocations/<id>/response`, or the error (the Python
  runtime's `errorMessage` / `errorType` / `stackTrace`) to `.../error`.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
# Calls to LocalStack on loopback never go through a proxy the function's environment may name.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def die_with_parent(parent_pid: int) -> None:
    """SIGTERM when LocalStack dies, so no runtime outlives a killed LocalStack (Linux; elsewhere a no-op).

    Set here rather than between fork and exec in LocalStack's many-threaded
    process; the parent check covers a LocalStack that died before it was set.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        sys.exit(f"LocalStack (pid {parent_pid}) is gone")


class LambdaContext:
    """The Python runtime's context object: what Powertools and Chalice read."""

    def __init__(self, request_id: str, invoked_function_arn: str, timeout_s: float) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        # Monotonic: a clock change must not make the remaining time jump.
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=30) as response:
        response.read()


def _error_body(exc: BaseException) -> bytes:
    return json.dumps(
        {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "stackTrace": traceback.format_tb(exc.__traceback__),
        }
    ).encode()


def load_handler(name: str) -> Any:
    """`module.function` -> the function, as the Python runtime resolves `_HANDLER`."""
    module_name, _, attribute = name.rpartition(".")
    if not module_name:
        raise ValueError(f"handler {name!r} is not of the form module.function")
    return getattr(importlib.import_module(module_name.replace("/", ".")), attribute)


class LogTail:
    """What the process wrote to its log file since the last call: one invocation's log lines.

    The first call also returns what the import printed: in a Lambda log
    stream, too, a cold start's init output comes before the first START.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0

    def read_new(self) -> str:
        sys.stdout.flush()
        sys.stderr.flush()
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            data = log.read()
        self.offset += len(data)
        return data.decode("utf-8", errors="replace")


def serve_invocations(port: int, invocations: queue.Queue[dict[str, Any]]) -> HTTPServer:
    """Accept `POST /invoke` on loopback and queue it: LocalStack waits for the result on its own endpoint."""

    class InvokeHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/invoke":
                self.send_response(404)
            else:
                invocations.put(json.loads(body))
                self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the function's log is for the function's lines

    server = HTTPServer((LOOPBACK, port), InvokeHandler)
    threading.Thread(target=server.serve_forever, name="invoke-server", daemon=True).start()
    return server


def run_invocation(handler: Any, invocation: dict[str, Any], endpoint: str, logs: LogTail, timeout_s: float) -> None:
    request_id = str(invocation["invoke-id"])
    # The Python runtime sets the trace header per invocation; X-Ray reads it.
    os.environ["_X_AMZN_TRACE_ID"] = str(invocation.get("trace-id") or "")
    context = LambdaContext(request_id, str(invocation.get("invoked-function-arn", "")), timeout_s)
    print(f"START RequestId: {request_id}", flush=True)
    started = time.monotonic()
    try:
        result = handler(json.loads(invocation.get("payload") or "null"), context)
        body, outcome = json.dumps(result).encode(), "response"
    except Exception as exc:  # the function's error is the invocation's result, as on Lambda
        traceback.print_exc()
        body, outcome = _error_body(exc), "error"
    print(f"END RequestId: {request_id} Duration: {(time.monotonic() - started) * 1000:.2f} ms", flush=True)
    _post(f"{endpoint}/invocations/{request_id}/logs", json.dumps({"logs": logs.read_new()}).encode())
    _post(f"{endpoint}/invocations/{request_id}/{outcome}", body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True, help="the file this process's output goes to")
    parser.add_argument("--parent-pid", type=int, required=True, help="LocalStack's pid: this process ends with it")
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid)

    endpoint = os.environ["LOCALSTACK_RUNTIME_ENDPOINT"]
    status = f"{endpoint}/status/{os.environ['LOCALSTACK_RUNTIME_ID']}"
    task_root = os.environ["LAMBDA_TASK_ROOT"]
    timeout_s = float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "3"))
    # The package's files first, then the standard library: nothing else.
    sys.path.insert(0, task_root)
    os.chdir(task_root)
    logs = LogTail(args.log)
    invocations: queue.Queue[dict[str, Any]] = queue.Queue()
    try:
        handler = load_handler(os.environ["_HANDLER"])
        serve_invocations(args.port, invocations)
    except Exception as exc:  # an import error is the environment's startup error, as on Lambda
        traceback.print_exc()
        _post(f"{status}/error", _error_body(exc))
        return 1
    _post(f"{status}/ready", b"{}")
    while True:
        run_invocation(handler, invocations.get(), endpoint, logs, timeout_s)


if __name__ == "__main__":
    sys.exit(main())
