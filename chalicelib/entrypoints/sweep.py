"""Schedule-triggered sweep: re-sends the work of orders left quiet past their sweep time."""

from __future__ import annotations

from typing import Any

from chalicelib.config import get_settings
from chalicelib.observability import count, lambda_handler
from chalicelib.service.dependencies import Dependencies
from chalicelib.service.recovery import sweep_pending


@lambda_handler
def sweep(event: dict[str, Any], context: Any, *, dependencies: Dependencies) -> int:
    """Scheduled: re-enqueue orders left pending (or pending_cancel) past their sweep time."""
    resent = sweep_pending(dependencies, limit=get_settings().pending_sweep_batch)
    count("OrdersReenqueued", resent)
    return resent
