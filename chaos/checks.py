"""Every order, as we report it over the API, checked against the exchange simulator's own record."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import requests

PENDING = "pending"
FAILED = "failed"
REJECTED = "rejected"
TERMINAL = frozenset({"filled", "canceled", "rejected", "expired", "replaced"})
# The simulator says "new" where we say "placed"; the other statuses are spelled alike.
OUR_STATUS = {"new": "placed"}
HTTP_TIMEOUT_S = 30.0
CHECK_THREADS = 8


class _Sessions(threading.local):
    """One requests.Session per thread: not thread-safe, but reused connections matter at 2,000 orders."""

    def __init__(self) -> None:
        self.session = requests.Session()


class ExchangeClient:
    """The exchange simulator's own record of each order, its totals and its knobs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = _Sessions()

    def configure(self, **knobs: float) -> None:
        self._local.session.post(f"{self.url}/admin/config", json=knobs, timeout=HTTP_TIMEOUT_S).raise_for_status()

    def record(self, order_id: str) -> dict[str, Any] | None:
        response = self._local.session.get(f"{self.url}/admin/orders/{order_id}", timeout=HTTP_TIMEOUT_S)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def stats(self) -> dict[str, Any]:
        response = self._local.session.get(f"{self.url}/stats", timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        return dict(response.json())

    def config(self) -> dict[str, Any]:
        """The knobs in force."""
        response = self._local.session.get(f"{self.url}/admin/config", timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        return dict(response.json())

    def feed_exec_ids(self) -> frozenset[str]:
        """The exec id of every report the feed carried: its whole replay, which a report lost for good is not in."""
        response = self._local.session.get(f"{self.url}/executions", params={"from_seq": 1}, timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        return frozenset(str(report["exec_id"]) for report in response.json()["reports"])


class ApiClient:
    """Our order API, as a client of one account sees it: every request carries its API key."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._local = _Sessions()

    def post(self, body: Mapping[str, Any], timeout_s: float = HTTP_TIMEOUT_S) -> requests.Response:
        return self._local.session.post(f"{self.url}/orders", json=body, headers=self._headers, timeout=timeout_s)

    def order(self, order_id: str) -> dict[str, Any] | None:
        url = f"{self.url}/orders/{order_id}"
        response = self._local.session.get(url, headers=self._headers, timeout=HTTP_TIMEOUT_S)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def executions(self, order_id: str) -> list[dict[str, Any]]:
        url = f"{self.url}/orders/{order_id}/executions"
        response = self._local.session.get(url, headers=self._headers, timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        return list(response.json()["executions"])


def price(value: str | float | None) -> Decimal | None:
    """A price as an exact decimal: the exchange sends strings, our API JSON numbers."""
    return None if value is None else Decimal(str(value))


def agrees_with_execution(ours: Mapping[str, Any], execution: Mapping[str, Any] | None) -> bool:
    """Whether our order shows exactly the exchange's final execution state (status, quantity, average price)."""
    if execution is None or not execution["done"]:
        return False
    return bool(
        ours["status"] == OUR_STATUS.get(execution["status"], execution["status"])
        and int(ours["filled_quantity"]) == execution["cum_qty"]
        and price(ours["average_fill_price"]) == price(execution["avg_price"])
    )


@dataclass(frozen=True)
class Expectations:
    """What a scenario demands of every order beyond "settled, placed at most once"."""

    max_attempts: int
    # failed means the exchange saw exactly max_attempts failed calls and no acceptance.
    failed_exhausted_attempts: bool = False
    # Executions flow: our final status, filled quantity and average price equal the
    # exchange's, and our execution list holds each of its execution ids once.
    executions: bool = False
    # Answers and reports were lost: each order checked by check_convergence, and its
    # execution list need hold only the reports the feed carried (these exec ids).
    feed_exec_ids: frozenset[str] | None = None


@dataclass
class Tally:
    """The verdict on a set of orders; each list holds one line per offending order, saying why."""

    checked: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    # Failed here, though the exchange holds the order (check_convergence): a mismatch of its own kind.
    failed_but_live: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)


def check_order(
    order_id: str, ours: Mapping[str, Any] | None, record: Mapping[str, Any] | None, expect: Expectations
) -> dict[str, list[str]]:
    """The problems of one order, by kind; empty lists for an order that is right."""
    found, exchange_says = _placed_once_and_found(order_id, ours, record, ("lost", "duplicated", "stuck", "mismatched"))
    accepted = int(record["accepted"]) if record else 0
    failures = int(record["failures"]) if record else 0
    if ours is None:
        return found
    status = str(ours["status"])
    if status == PENDING:
        found["stuck"].append(f"{order_id} still pending ({exchange_says})")
    elif status == FAILED:
        if accepted:
            found["mismatched"].append(f"{order_id} failed here, but the exchange accepted it ({exchange_says})")
        elif expect.failed_exhausted_attempts and failures != expect.max_attempts:
            found["mismatched"].append(
                f"{order_id} failed after {failures} exchange failures, not {expect.max_attempts} ({exchange_says}; "
                f"reason: {ours.get('failure_reason')})"
            )
    elif accepted == 0:
        found["lost"].append(f"{order_id} {status} here, but the exchange never accepted it ({exchange_says})")
    elif expect.executions:
        execution = record.get("execution") if record else None
        if not agrees_with_execution(ours, execution):
            theirs = (
                "no execution"
                if execution is None
                else f"{execution['status']} {execution['cum_qty']} @ {execution['avg_price']} done={execution['done']}"
            )
            line = (
                f"{order_id} {status} {ours['filled_quantity']} @ {ours['average_fill_price']} here, exchange: {theirs}"
            )
            terminal_here = status in TERMINAL
            found["mismatched" if terminal_here else "stuck"].append(line)
    return found


def _not_accepted(order_id: str, status: str, exchange_says: str) -> dict[str, list[str]]:
    if status == PENDING:
        return {"stuck": [f"{order_id} still pending, and the exchange never accepted it ({exchange_says})"]}
    if status not in (FAILED, REJECTED):
        return {"lost": [f"{order_id} {status} here, but the exchange never accepted it ({exchange_says})"]}
    return {}


def _placed_once_and_found(
    order_id: str, ours: Mapping[str, Any] | None, record: Mapping[str, Any] | None, kinds: Iterable[str]
) -> tuple[dict[str, list[str]], str]:
    """What every check starts from: placed at most once at the exchange, and the acknowledged order ours to read."""
    found: dict[str, list[str]] = {kind: [] for kind in kinds}
    accepted = int(record["accepted"]) if record else 0
    exchange_says = f"exchange: accepted={accepted} failures={int(record['failures']) if record else 0}"
    if accepted > 1:
        found["duplicated"].append(f"{order_id} placed {accepted} times ({exchange_says})")
    if ours is None:
        found["lost"].append(f"{order_id} acknowledged, but GET /orders/{{id}} is 404 ({exchange_says})")
    return found, exchange_says


def check_convergence(
    order_id: str, ours: Mapping[str, Any] | None, record: Mapping[str, Any] | None
) -> dict[str, list[str]]:
    """One order against the exchange's record after answers and reports were lost; empty once they agree.

    Agreeing means: never accepted, and failed or rejected here; or the exchange's
    final status, filled quantity and average price here. An order the exchange
    accepted and then rejected, nothing filled, may also be failed here: both say
    "not executed", and the application keeps rejected out of its corrections.
    """
    kinds = ("lost", "duplicated", "stuck", "mismatched", "failed_but_live")
    found, exchange_says = _placed_once_and_found(order_id, ours, record, kinds)
    accepted = int(record["accepted"]) if record else 0
    if ours is None:
        return found
    status = str(ours["status"])
    if accepted == 0:
        for kind, lines in _not_accepted(order_id, status, exchange_says).items():
            found[kind] += lines
        return found
    execution = record.get("execution") if record else None
    here = f"{status} {ours['filled_quantity']} @ {ours['average_fill_price']} here"
    if execution is None or not execution["done"]:
        # The exchange works an order for seconds here; past the deadline that is stuck too.
        theirs = "no report yet" if execution is None else f"{execution['status']} {execution['cum_qty']}"
        found["stuck"].append(f"{order_id} {here}, the exchange not done with it ({theirs})")
    elif status == FAILED:
        if execution["status"] != REJECTED or execution["cum_qty"]:
            theirs = f"{execution['status']} {execution['cum_qty']} @ {execution['avg_price']}"
            found["failed_but_live"].append(f"{order_id} failed here, the exchange: {theirs} ({exchange_says})")
    elif not agrees_with_execution(ours, execution):
        theirs = f"{execution['status']} {execution['cum_qty']} @ {execution['avg_price']}"
        found["mismatched" if status in TERMINAL else "stuck"].append(f"{order_id} {here}, exchange: {theirs}")
    return found


def check_executions(
    order_id: str,
    listed: Iterable[Mapping[str, Any]],
    record: Mapping[str, Any] | None,
    carried: frozenset[str] | None = None,
) -> dict[str, list[str]]:
    """Our execution list against the exchange's: each of its execution ids once, nothing else.

    With `carried` (the exec ids the feed carried), an execution of the exchange's
    that the feed never carried (lost for good) need not be listed.
    """
    found: dict[str, list[str]] = {"lost": [], "duplicated": [], "mismatched": []}
    execution = (record or {}).get("execution") or {}
    theirs = [str(exec_id) for exec_id in execution.get("exec_ids", [])]
    counts = Counter(str(item["id"]) for item in listed)
    repeated = sorted(exec_id for exec_id, count in counts.items() if count > 1)
    owed = set(theirs) if carried is None else set(theirs) & carried
    missing = sorted(owed - set(counts))
    extra = sorted(set(counts) - set(theirs))
    if repeated:
        found["duplicated"].append(f"{order_id} lists executions more than once: {', '.join(repeated)}")
    if missing:
        found["lost"].append(f"{order_id} misses executions the exchange sent: {', '.join(missing)}")
    if extra:
        found["mismatched"].append(f"{order_id} lists executions the exchange never sent: {', '.join(extra)}")
    return found


def verify_orders(api: ApiClient, exchange: ExchangeClient, order_ids: Iterable[str], expect: Expectations) -> Tally:
    """Read every order from our API and from the exchange, and sort out what is wrong."""
    ids = sorted(set(order_ids))

    def one(order_id: str) -> tuple[str, dict[str, list[str]]]:
        ours = api.order(order_id)
        record = exchange.record(order_id)
        carried = expect.feed_exec_ids
        found = (
            check_order(order_id, ours, record, expect)
            if carried is None
            else check_convergence(order_id, ours, record)
        )
        if expect.executions and ours is not None and record is not None and record.get("execution"):
            for kind, lines in check_executions(order_id, api.executions(order_id), record, carried).items():
                found[kind] += lines
        return ("missing" if ours is None else str(ours["status"])), found

    tally = Tally(checked=len(ids))
    with ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="check") as pool:
        for status, found in pool.map(one, ids):
            tally.statuses[status] += 1
            tally.lost += found["lost"]
            tally.duplicated += found["duplicated"]
            tally.stuck += found["stuck"]
            tally.mismatched += found["mismatched"]
            tally.failed_but_live += found.get("failed_but_live", [])
    return tally
