"""Structured logs, metrics and traces (Powertools), set up once for every function."""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar, cast

# Importing Tracer is cheap (it loads the X-Ray SDK lazily); building one is not.
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice

SERVICE = "orders"
NAMESPACE = "Brokerage"

Handler = TypeVar("Handler", bound=Callable[..., Any])
# What the X-Ray SDK traces: the AWS calls. Named rather than Powertools'
# default patch_all(), which also imports and patches every other supported
# library it finds installed (requests, httpx, sqlite3...), none of which we
# call; on the deployed package the two trace the same calls.
TRACED_MODULES = ("botocore", "pynamodb")

logger = Logger(service=SERVICE)
# EMF: metrics are log lines CloudWatch turns into metrics; no API call on
# the request path. POWERTOOLS_METRICS_DISABLED=true silences them locally.
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def tracing_enabled(environment: Mapping[str, str] = os.environ) -> bool:
    """Whether Powertools' Tracer would trace here: inside Lambda (not SAM or chalice local), not switched off.

    The same rule as Tracer's own (tests/unit/test_import_hygiene.py holds the
    two together), asked before building one: even a disabled Tracer imports
    the X-Ray SDK, which outside Lambda creates two botocore clients at import.
    """
    if resolve_truthy_env_var_choice(env=environment.get(constants.TRACER_DISABLED_ENV, "false")):
        return False
    in_lambda = bool(environment.get(constants.LAMBDA_TASK_ROOT_ENV))
    emulated = bool(environment.get(constants.SAM_LOCAL_ENV) or environment.get(constants.CHALICE_LOCAL_ENV))
    return in_lambda and not emulated


class NoTracing:
    """Stands in for Tracer where it would be disabled: its decorators hand the function back unchanged."""

    disabled = True

    def capture_lambda_handler(self, lambda_handler: Handler) -> Handler:
        return lambda_handler

    def capture_method(self, method: Handler) -> Handler:
        return method


def _tracer() -> Tracer | NoTracing:
    if not tracing_enabled():
        return NoTracing()
    return Tracer(service=SERVICE, patch_modules=TRACED_MODULES)


# X-Ray on AWS (the stages' "xray": true); off locally, where no daemon listens.
tracer = _tracer()

# The service layer and adapters log through the standard library; routing
# the package's logger through Powertools' handler gives them the same JSON
# lines, with the keys (order_id, correlation_id) a handler appended.
logging.getLogger("chalicelib")
copy_config_to_registered_loggers(source_logger=logger, include={"chalicelib"})

# Batch handlers place and apply records in worker threads; Powertools keeps
# metric values in shared lists.
_metrics_lock = threading.Lock()


def lambda_handler(handler: Handler) -> Handler:
    """Around a function taking a Lambda (event, context): log lines naming the invocation, X-Ray traces, EMF metrics.

    Chalice hands its event handlers one argument (the event, holding the
    context), so Powertools' decorators go on the (event, context) function
    each handler delegates to, not on the Chalice handler.
    """
    return cast(Handler, tracer.capture_lambda_handler(metrics.log_metrics(with_lambda_context(handler))))


def with_lambda_context(handler: Handler) -> Handler:
    """Every log line of an invocation carries its request id, function and cold start, as Logger.inject_lambda_context.

    The same keys, but per invocation rather than for the whole process
    (Powertools appends them to the logger itself): the local runner invokes
    several functions at once in one process, and each line must name its
    own invocation. Threads the invocation hands work to (LoggingThreadPool)
    carry the keys on.
    """
    cold_start = True  # Lambda starts one process per function: the first invocation of this one is the cold start

    @functools.wraps(handler)
    def logged(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal cold_start
        invocation = {"cold_start": cold_start, **vars(build_lambda_context_model(context))}
        cold_start = False

        def run() -> Any:
            logger.thread_safe_append_keys(**invocation)
            return handler(event, context, *args, **kwargs)

        # A copy of the context: the keys end with the invocation.
        return contextvars.copy_context().run(run)

    return cast(Handler, logged)


class LoggingThreadPool(ThreadPoolExecutor):
    """A thread pool whose tasks log with the keys of whoever submitted them (the invocation, its order)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        # Log keys live in a context variable, which a new thread does not inherit.
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def count(name: str, value: float = 1) -> None:
    with _metrics_lock:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def count_now(name: str, **properties: str) -> None:
    """A count of 1 written at once, as a log line of its own carrying the properties (searchable in the logs).

    For a function no lambda_handler wraps (the authorizer, whose answer is
    its whole result): nothing would flush `metrics` there. The properties
    are not dimensions (an account id as a dimension is a metric per account).
    """
    if is_metrics_disabled():
        return
    with single_metric(
        name=name, unit=MetricUnit.Count, value=1, namespace=NAMESPACE, default_dimensions={"service": SERVICE}
    ) as metric:
        for key, value in properties.items():
            metric.add_metadata(key=key, value=value)


def seconds(name: str, value: float) -> None:
    with _metrics_lock:
        metrics.add_metric(name=name, unit=MetricUnit.Seconds, value=value)
