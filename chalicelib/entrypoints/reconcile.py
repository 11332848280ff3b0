"""Schedule-triggered reconciler: compares a slice of the open and recently failed orders with the exchange."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from chalicelib.bootstrap import exchange_call_s
from chalicelib.config import get_settings
from chalicelib.observability import LoggingThreadPool, count, lambda_handler, logger
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.reconciliation import Check, reconcile_orders

# Each order is one round trip to the exchange (~0.5 s): a run of a few
# hundred overlaps them rather than waiting for each in turn.
RECONCILE_THREADS = 8
# Seconds kept back for the cursor's write and the metrics at the end of a run.
RESERVE_S = 5


@functools.cache
def _executor() -> LoggingThreadPool:
    return LoggingThreadPool(max_workers=RECONCILE_THREADS, thread_name_prefix="reconcile")


@lambda_handler
def reconcile(event: dict[str, Any], context: Any, *, dependencies: Dependencies) -> dict[str, int]:
    """Scheduled: one bounded run of the reconciler; its counts as metrics and in the answer."""
    settings = get_settings()
    # Room for one more exchange call and saving the cursor before the function's timeout.
    reserve_ms = 1000 * (exchange_call_s(settings) + RESERVE_S)
    run = reconcile_orders(
        dependencies,
        limit=settings.reconcile_batch,
        failed_window=timedelta(hours=settings.reconcile_failed_window_h),
        settle=timedelta(seconds=settings.reconcile_settle_s),
        executor=_executor(),
        time_left=lambda: context.get_remaining_time_in_millis() > reserve_ms,
    )
    count("OrdersReconciled", run.checked)
    count("OrdersRepaired", run.repaired)
    if run.checks[Check.CORRECTED]:
        count("OrdersCorrected", run.checks[Check.CORRECTED])
    if run.checks[Check.UNAVAILABLE]:
        count("ExchangeStatusUnavailable", run.checks[Check.UNAVAILABLE])
    if run.checks[Check.IMPLAUSIBLE]:
        count("ExchangeStatusImplausible", run.checks[Check.IMPLAUSIBLE])
    summary = {check.value: number for check, number in run.checks.items() if number}
    logger.info("reconciler run", checked=run.checked, repaired=run.repaired, checks=summary)
    return {"checked": run.checked, "repaired": run.repaired, **summary}
