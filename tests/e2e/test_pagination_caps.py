"""Bounded answers through the whole local stack: an order's executions page by page, and GET /orders' read cap."""

from __future__ import annotations

import subprocess
import time
import uuid
from typing import Any

import pytest
import requests

from devstack.processes import free_port
from devstack.stack import LocalStack, start_api
from tests.e2e.helpers import Exchange, auth
from tests.polling import wait_until

# moto_only: the API's page sizes and read cap; the Queries are test_list_orders' and test_executions_table's.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]

APPLE, SAP = "US0378331005", "DE0007164600"


def post_order(api_url: str, key: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "market", "side": "buy", "instrument": SAP, "quantity": 40}
    body.update(changes)
    response = requests.post(f"{api_url}/orders", json=body, headers=auth(key), timeout=30)
    assert response.status_code == 201, response.text
    return dict(response.json())


def every_page(url: str, key: str, cursor_parameter: str, items: str) -> list[dict[str, Any]]:
    """Each page's body, following `next` (passed back as cursor_parameter) until it is null."""
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        separator = "&" if "?" in url else "?"
        page_url = url if cursor is None else f"{url}{separator}{cursor_parameter}={cursor}"
        response = requests.get(page_url, headers=auth(key), timeout=30)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = response.json()["next"]
        if cursor is None:
            return pages
        assert len(pages) < 1_000, f"no end to the {items}"


def test_an_orders_executions_come_page_by_page_oldest_first_each_once(stack: LocalStack, exchange: Exchange) -> None:
    exchange.configure(reject_rate=0.0, cancel_rate=0.0)
    order = post_order(stack.api_url, stack.api_key)

    def all_reports_in() -> list[str] | None:
        record = exchange.record(order["id"])
        execution = (record or {}).get("execution") or {}
        sent = execution.get("exec_ids") or []
        listed = requests.get(
            f"{stack.api_url}/orders/{order['id']}/executions?limit=500", headers=auth(stack.api_key), timeout=10
        ).json()
        ids = [e["id"] for e in listed["executions"]]
        return sent if execution.get("done") and ids == sent and listed["next"] is None else None

    sent = wait_until(all_reports_in, timeout_s=60)
    assert len(sent) >= 2  # a new and a fill at least: more than one page of one
    pages = every_page(f"{stack.api_url}/orders/{order['id']}/executions?limit=1", stack.api_key, "after", "executions")
    assert [len(page["executions"]) for page in pages] == [1] * len(sent)
    assert [e["id"] for page in pages for e in page["executions"]] == sent
    assert all(page["order_id"] == order["id"] for page in pages)
    times = [e["time"] for page in pages for e in page["executions"]]
    assert times == sorted(times)


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=501", "limit"), ("after=not-a-cursor", "after"), ("limit=1&limit=2", "limit")],
)
def test_a_bad_executions_page_request_is_a_422_naming_the_parameter(stack: LocalStack, query: str, field: str) -> None:
    order = post_order(stack.api_url, stack.api_key)
    response = requests.get(
        f"{stack.api_url}/orders/{order['id']}/executions?{query}", headers=auth(stack.api_key), timeout=30
    )
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == [field]


def test_a_selective_filter_over_a_history_longer_than_the_cap_answers_short_pages_and_misses_nothing(
    stack: LocalStack,
) -> None:
    """A second API process reading at most 4 orders per request (LIST_MAX_ITEMS_READ): the shared one keeps its cap."""
    key = stack.new_api_key(f"cap-{uuid.uuid4().hex[:8]}")
    history = [post_order(stack.api_url, key, instrument=APPLE if n % 5 == 0 else SAP) for n in range(15)]
    apple = [order["id"] for order in reversed(history) if order["instrument"] == APPLE]
    port = free_port()
    with start_api(port, {**stack.env, "LIST_MAX_ITEMS_READ": "4"}, subprocess.DEVNULL):
        api_url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        first = requests.get(f"{api_url}/orders?instrument={APPLE}&limit=50", headers=auth(key), timeout=30)
        elapsed = time.monotonic() - started
        pages = every_page(f"{api_url}/orders?instrument={APPLE}&limit=50", key, "next", "orders")
        everything = every_page(f"{api_url}/orders?limit=50", key, "next", "orders")
    assert first.status_code == 200
    assert elapsed < 5
    # Newest first: orders 14..11 hold no Apple order, so the first page is empty but goes on.
    assert (first.json()["orders"], first.json()["next"] is not None) == ([], True)
    assert all(len(page["orders"]) < 50 for page in pages)
    assert [order["id"] for page in pages for order in page["orders"]] == apple
    assert [order["id"] for page in everything for order in page["orders"]] == [o["id"] for o in reversed(history)]
    assert all(len(page["orders"]) <= 4 for page in everything)
