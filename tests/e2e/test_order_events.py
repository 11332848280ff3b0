"""GET /events end to end: the account's replayable log, paged by cursor while its orders change (issue 16)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
import requests

from devstack.stack import LocalStack
from devstack.stream_client import Account, new_account
from tests.e2e.helpers import Exchange
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

FIRST_EVENT_ID = f"{1:020d}"
START_CURSOR = f"{0:020d}"  # the position before the first event (START_POSITION)
FINAL_TYPES = {"fill", "canceled", "rejected", "expired", "failed"}
DONE_TIMEOUT_S = 60.0


@pytest.fixture
def account(stack: LocalStack) -> Account:
    return new_account(stack, "events")


def every_order_final(account: Account, order_ids: set[str]) -> list[dict[str, Any]] | None:
    """The whole log once it holds a final event of every order, else None."""
    log = account.all_events()
    return log if {e["order"]["id"] for e in log if e["type"] in FINAL_TYPES} >= order_ids else None


def test_pages_go_oldest_first_and_next_resumes_right_after_the_last_event(
    account: Account, exchange: Exchange
) -> None:
    exchange.configure(reject_rate=0.0, cancel_rate=0.0)
    order_ids = {account.post_order(quantity=4 + i)["id"] for i in range(3)}
    log = wait_until(partial(every_order_final, account, order_ids), timeout_s=DONE_TIMEOUT_S)
    assert log[0]["id"] == FIRST_EVENT_ID  # without after: from the oldest event kept
    assert [e["id"] for e in log] == [f"{n:020d}" for n in range(1, len(log) + 1)]

    pages, after = [], None
    while True:
        response = account.events_page(after, 2)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"events", "next"}
        assert len(page["events"]) <= 2
        # next: the last event returned, or the cursor itself when there was none.
        assert page["next"] == (page["events"][-1]["id"] if page["events"] else (after or page["next"]))
        if not page["events"]:
            break
        pages.append(page["events"])
        after = page["next"]
    assert [e for page in pages for e in page] == log
    assert account.events_page().json()["events"] == log[:100]  # the default limit holds them all here
    # An order's events follow its states: created first, its final event last.
    for order_id in order_ids:
        types = [e["type"] for e in log if e["order"]["id"] == order_id]
        assert types[0] == "created" and types[-1] == "fill", types


def test_paging_while_orders_change_never_skips_or_repeats_an_event(account: Account, exchange: Exchange) -> None:
    exchange.configure(exec_delay_s=0.1)
    stop = threading.Event()
    read: list[dict[str, Any]] = []
    # (events read before the page, the page's size) of the pages read while orders were still changing.
    early_pages: list[tuple[int, int]] = []

    def page_until_stopped() -> None:
        after = None
        while True:
            finished = stop.is_set()  # read before the page: the last page is taken after every change
            response = account.events_page(after, 3)
            assert response.status_code == 200, response.text
            page = response.json()
            if not finished:
                early_pages.append((len(read), len(page["events"])))
            read.extend(page["events"])
            after = page["next"]
            if finished and not page["events"]:
                return

    with ThreadPoolExecutor(5) as pool:
        pager = pool.submit(page_until_stopped)
        posted = list(pool.map(lambda i: account.post_order(quantity=3 + i % 7)["id"], range(24)))
        log = wait_until(partial(every_order_final, account, set(posted)), timeout_s=DONE_TIMEOUT_S)
        stop.set()
        pager.result(timeout=DONE_TIMEOUT_S)
    ids = [e["id"] for e in read]
    assert len(ids) == len(set(ids)), "an event was read twice"
    assert ids == sorted(ids), "the pages went backwards"
    # Everything logged meanwhile (the final read above, and whatever followed it) was read, once, as logged.
    assert read[: len(log)] == log
    assert read == account.all_events()
    # The pager caught up with the head (a short page) while more events were still to come: it paged
    # through a log that grew under it, which is what this is about.
    assert any(size < 3 and before + size < len(read) for before, size in early_pages), early_pages


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"after": "abc"}, "after"),
        ({"after": "9" * 20}, "after"),  # well formed, but no such event in this log
        ({"after": "-1"}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1.5"}, "limit"),
    ],
)
def test_an_unknown_cursor_or_a_bad_limit_is_a_422_naming_the_parameter(
    account: Account, params: dict[str, str], named: str
) -> None:
    response = account.session.get(f"{account.api_url}/events", params=params, timeout=30)
    assert response.status_code == 422, response.text
    body = response.json()
    assert named in body["message"]
    assert [error["field"] for error in body.get("errors", [{"field": named}])] == [named]


def test_an_empty_log_answers_a_cursor_that_polls_on_and_limits_at_the_bounds_are_accepted(account: Account) -> None:
    for limit in ("1", "500"):
        response = account.events_page(limit=limit)
        assert response.status_code == 200, response.text
        assert response.json() == {"events": [], "next": START_CURSOR}
    polled = account.events_page(START_CURSOR)
    assert polled.status_code == 200, polled.text
    assert polled.json() == {"events": [], "next": START_CURSOR}


def test_without_a_key_the_log_is_refused(stack: LocalStack) -> None:
    response = requests.get(f"{stack.api_url}/events", timeout=30)
    assert response.status_code == 401
