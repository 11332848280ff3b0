"""Structured logs, metrics and traces (Powertools), set up once for every function."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = "orders"

logger = Logger(service=SERVICE)
# EMF: metrics are log lines CloudWatch turns into metrics; no API call on
# the request path. POWERTOOLS_METRICS_DISABLED=true silences them locally.
metrics = Metrics(namespace="Brokerage", service=SERVICE)
# X-Ray on AWS; POWERTOOLS_TRACE_DISABLED=true locally, where no daemon listens.
tracer = Tracer(service=SERVICE)

# The service layer and adapters log through the standard library; routing
# the package's logger through Powertools' handler gives them the same JSON
# lines, with the keys (order_id, correlation_id) a handler appended.
logging.getLogger("chalicelib")
copy_config_to_registered_loggers(source_logger=logger, include={"chalicelib"})

# Batch handlers place and apply records in worker threads; Powertools keeps
# metric values in shared lists.
_metrics_lock = threading.Lock()


Handler = TypeVar("Handler", bound=Callable[..., Any])


def lambda_handler(handler: Handler) -> Handler:
    """Trace (X-Ray) and flush metrics (EMF) around a function taking a Lambda (event, context)."""
    return cast(Handler, tracer.capture_lambda_handler(metrics.log_metrics(handler)))


def count(name: str, value: float = 1) -> None:
    with _metrics_lock:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def seconds(name: str, value: float) -> None:
    with _metrics_lock:
        metrics.add_metric(name=name, unit=MetricUnit.Seconds, value=value)
