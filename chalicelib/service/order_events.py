"""Logging the order events of stored order changes (from the orders table's stream), then pushing them live."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.adapters.streaming import LoggedEvent, NewLogEntry
from chalicelib.domain.model import ExecutionReport
from chalicelib.domain.order_events import OrderChange, OrderEvent, derive_events
from chalicelib.service.dependencies import Dependencies

logger = logging.getLogger(__name__)

# An event's client JSON without its id (what the log stores as its body). Given by the caller, the
# entrypoint (entrypoints/event_models.event_body): the JSON is the API's, not the service's.
EventRenderer = Callable[[OrderEvent], dict[str, Any]]


@dataclass
class RecordedChanges:
    """What record_changes did with a sequence of changes, by their index in it."""

    logged: list[LoggedEvent] = field(default_factory=list)  # in change order, earlier logs' included
    # The changes whose events could not be derived or rendered (they never will be): index -> why.
    unrecordable: dict[int, str] = field(default_factory=dict)
    # The first change not recorded because storage failed (it and every later one may be retried).
    failed_from: int | None = None


def new_entries(change: OrderChange, dependencies: Dependencies, render: EventRenderer) -> list[NewLogEntry]:
    """The log entries of one change; its order's execution reports are read only if the change filled some.

    Raises StorageUnavailable (may succeed later); anything else means the change cannot be recorded.
    """
    before, after = change.before, change.after
    executions: Sequence[ExecutionReport] = ()
    if before is not None and after.filled_quantity > before.filled_quantity:
        # The consumer stores the reports before it writes the order (service/executions.py),
        # so every report of this change is there by now.
        executions = dependencies.executions.list_for_order(after.id)
    return [
        NewLogEntry(change_key=event.change_key, order_id=after.id, type=event.type.value, body=render(event))
        for event in derive_events(change, executions)
    ]


def record_changes(
    changes: Sequence[OrderChange], dependencies: Dependencies, render: EventRenderer
) -> RecordedChanges:
    """Log the events of the changes, in the changes' order, then push them all to listening clients at once.

    A change whose events cannot be derived or rendered is set aside (in the
    result), the others are logged. At the first storage failure recording
    stops: that change and every later one are not logged (failed_from), so a
    retry never logs a later change of an order before an earlier one; the
    ones before it are logged and pushed. Logging is idempotent (each event
    once, by its change key), so changes may be recorded again. Pushing comes
    after all logging, once; if it could not read who listens, the whole batch is reported failed
    (retried, logging nothing twice), else a failed push only closes its connection (its client
    replays from its cursor).
    """
    result = RecordedChanges()
    # (index of its first change, account, entries): one append per run of consecutive changes of
    # one account, so its events keep their order in its log.
    runs: list[tuple[int, str, list[NewLogEntry]]] = []
    for index, change in enumerate(changes):
        try:
            entries = new_entries(change, dependencies, render)
        except StorageUnavailable:
            logger.warning("order change not recorded: storage unavailable", exc_info=True)
            result.failed_from = index
            break
        except Exception as exc:  # a change no retry can record: set aside, never blocking the others
            result.unrecordable[index] = f"{type(exc).__name__}: {exc}"
            continue
        if not entries:
            continue
        if runs and runs[-1][1] == change.after.account_id:
            runs[-1][2].extend(entries)
        else:
            runs.append((index, change.after.account_id, entries))
    for first, account_id, entries in runs:
        if result.failed_from is not None and first >= result.failed_from:
            break
        try:
            result.logged.extend(dependencies.stream.event_log.append(account_id, entries))
        except Exception:  # StorageUnavailable, or a fault of the log's: retried either way, never lost
            logger.warning("order events not logged", exc_info=True)
            result.failed_from = first
            break
    if not _publish(result.logged, dependencies):
        # Logged, but no listener was told: the whole batch comes back (logging it again logs
        # nothing twice) and is pushed then, instead of listening clients silently lacking it.
        result.failed_from = 0
    return result


def record_order_changes(
    changes: Sequence[OrderChange], dependencies: Dependencies, render: EventRenderer
) -> list[LoggedEvent]:
    """Log the events of the changes, in order, then push them: all of them or StorageUnavailable.

    Raises StorageUnavailable if the log or the executions cannot be reached
    (the changes before that are logged and pushed), and the first error of a
    change that cannot be recorded; a failed push never raises.
    """
    result = record_changes(changes, dependencies, render)
    if result.failed_from is not None:
        raise StorageUnavailable(f"order changes from #{result.failed_from} on not recorded")
    if result.unrecordable:
        index, reason = next(iter(result.unrecordable.items()))
        raise ValueError(f"order change #{index} cannot be recorded: {reason}")
    return result.logged


def _publish(logged: list[LoggedEvent], dependencies: Dependencies) -> bool:
    """Push the events; False only if the listeners could not be read (nobody was pushed to)."""
    if not logged:
        return True
    # Imported here: the stream service imports the accounts service, which this module's other callers
    # do not need to load.
    from chalicelib.service import stream  # noqa: PLC0415

    try:
        stream.publish(logged, dependencies)
    except stream.ListenersUnreadable:
        logger.warning("order events not pushed: listeners unreadable", extra={"events": len(logged)}, exc_info=True)
        return False
    except Exception:  # any other fault of a push: the connections concerned were closed, clients replay
        logger.exception("publishing order events failed", extra={"events": len(logged)})
    return True
