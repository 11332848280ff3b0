"""Kinesis-triggered consumer of execution reports: applies them to their orders, sets aside what never can apply.

(GET /orders/{id}/executions is an HTTP route: chalicelib/entrypoints/http.py.)
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from chalicelib.domain.model import ExecutionReport
from chalicelib.entrypoints.feed_message import parse_execution_report
from chalicelib.observability import LoggingThreadPool, count, lambda_handler, logger
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.executions import apply_execution_reports


@functools.cache
def _executor() -> LoggingThreadPool:
    # DynamoDB round trips dominate; a few threads overlap them without
    # contending for a Lambda's share of one vCPU.
    return LoggingThreadPool(max_workers=8, thread_name_prefix="apply")


def _failed_record(record: dict[str, Any], reason: str) -> str:
    kinesis = record.get("kinesis", {})
    return json.dumps(
        {
            "reason": reason,
            "eventSourceARN": record.get("eventSourceARN"),
            "eventID": record.get("eventID"),
            "sequenceNumber": kinesis.get("sequenceNumber"),
            "partitionKey": kinesis.get("partitionKey"),
            "data": kinesis.get("data"),
        }
    )


@lambda_handler
def handle_batch(event: dict[str, Any], context: Any, *, dependencies: Dependencies) -> dict[str, Any]:
    """Lambda Kinesis event in, partial batch response out (the first failed sequence number).

    A record that is not a valid report, that names an order we do not
    have, or that cannot be true of its order (quarantined: never applied nor
    stored, see chalicelib/domain/plausibility.py) cannot succeed on retry: it
    goes to the on-failure queue with the reason and counts as done, so it
    never blocks its shard.
    """
    records: list[dict[str, Any]] = event.get("Records", [])
    failed_queue = dependencies.executions_failed_queue
    parsed: list[tuple[dict[str, Any], ExecutionReport]] = []
    for record in records:
        try:
            parsed.append((record, parse_execution_report(base64.b64decode(record["kinesis"]["data"]))))
        except ValueError as exc:
            logger.error(
                "poison execution record", sequence_number=record["kinesis"]["sequenceNumber"], reason=str(exc)
            )
            failed_queue.send(_failed_record(record, str(exc)))

    result = apply_execution_reports([report for _, report in parsed], dependencies, executor=_executor())
    implausible = 0
    for record, report in parsed:
        if report.order_id in result.unknown_orders:
            failed_queue.send(_failed_record(record, f"unknown order {report.order_id}"))
        elif report in result.quarantined:
            # The service logged each one as an error, with its order's correlation id.
            failed_queue.send(_failed_record(record, f"implausible execution report: {result.quarantined[report]}"))
            implausible += 1
    count("ExecutionsApplied", len(parsed) - implausible)
    # What the venue sent that cannot be true, malformed or implausible (alarmed);
    # an unknown order is not counted: it may be a report of an order we lost.
    quarantined = len(records) - len(parsed) + implausible
    if quarantined:
        count("ExecutionReportsQuarantined", quarantined)
    if result.corrected_orders:
        count("OrdersCorrected", result.corrected_orders)
    logger.info(
        "executions applied",
        records=len(records),
        orders_updated=result.updated_orders,
        orders_failed=len(result.failed_orders),
        reports_quarantined=quarantined,
    )

    to_retry = [record for record, report in parsed if report.order_id in result.failed_orders]
    if not to_retry:
        return {"batchItemFailures": []}
    # Kinesis retries from the lowest failed sequence number onwards; the
    # reports after it are applied again, which changes nothing.
    first = min(to_retry, key=lambda record: int(record["kinesis"]["sequenceNumber"]))
    return {"batchItemFailures": [{"itemIdentifier": first["kinesis"]["sequenceNumber"]}]}
