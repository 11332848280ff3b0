"""Replaces racing fills and cancels, with a feed that repeats and reorders (issue 17's chaos): every order ends
equal to the exchange's record.

Many orders at once, each worked by the simulator while the test replaces it (sometimes twice, the second
meeting the first's pending replace), cancels it, or cancels its replacement, in a random order per seed.
Whatever the exchange decided for each (the replace first or the fill, the cancel or the replace), ours must
end the same: the original filled, canceled, expired or replaced like its record; a replacement the exchange
took equal to its record; one it refused rejected, too late, with its original done at the exchange.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
import requests

from devstack.stack import LocalStack
from devstack.stream_client import TERMINAL, Account, new_account
from tests.e2e.helpers import Exchange
from tests.polling import wait_until

# moto_only: the whole order path is the same on LocalStack (test_replace runs there); this is volume.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]
# After every other test (tests/e2e/conftest.py): moto's canceled transactions can cost the stack's
# stream poller its place, and later tests their order events.
RUN_LAST = True

ISIN = "IT0003132476"
ORDERS = 16
SEED = random.randrange(2**32)
SETTLE_TIMEOUT_S = 120.0
# Fills, partial fills and rests in quick steps; the feed repeats and reorders reports.
WORKING = {
    "reject_rate": 0.0,
    "cancel_rate": 0.0,
    "limit_ttl_s": None,
    "limit_outcome": "random",
    "exec_delay_s": 0.3,
    "feed_duplicate_rate": 0.2,
    "feed_reorder_rate": 0.2,
}
OUR_STATUS = {"new": "placed"}


@pytest.fixture
def account(stack: LocalStack) -> Account:
    return new_account(stack, "replace-races")


def race(account: Account, order_id: str, rng: random.Random) -> list[str]:
    """Replace the order, maybe again, maybe cancel it or its replacement; the ids of every replacement made."""
    replacements = []
    for _ in range(rng.choice((1, 1, 2))):
        answer = account.session.patch(
            f"{account.api_url}/orders/{order_id}", json={"quantity": rng.randint(12, 30)}, timeout=30
        )
        # 409: done already, still pending, or a replace or cancel pending; never a 5xx.
        assert answer.status_code in (202, 409), answer.text
        if answer.status_code == 202:
            replacements.append(answer.json()["id"])
    target = rng.choice([order_id, *replacements, None])
    if target is not None:
        answer = account.session.delete(f"{account.api_url}/orders/{target}", timeout=30)
        assert answer.status_code in (200, 202, 409), answer.text
    return replacements


def converged(account: Account, exchange: Exchange, order_id: str) -> dict[str, Any] | None:
    """Our order once it equals the exchange's record (a refused replacement: rejected, too late), else None."""
    ours = account.order(order_id)
    execution = (exchange.record(order_id) or {}).get("execution")
    if execution is None:
        # Never accepted: a replacement the exchange refused, or one canceled before it was sent.
        refused = ours["status"] == "rejected" and ours["failure_reason"] == "too late to replace"
        return ours if refused or ours["status"] == "canceled" else None
    same = (
        ours["status"] == OUR_STATUS.get(execution["status"], execution["status"])
        and ours["filled_quantity"] == execution["cum_qty"]
    )
    return ours if same else None


def test_replaces_racing_fills_and_cancels_end_where_the_exchange_is(account: Account, exchange: Exchange) -> None:
    rng = random.Random(SEED)
    exchange.configure(**WORKING)
    reference = float(requests.get(f"{exchange.url}/admin/prices/{ISIN}", timeout=5).json()["reference_price"])
    originals = [
        account.post_order(
            type="limit", instrument=ISIN, quantity=10, limit_price=round(reference * 1.02, 2), time_in_force="gtc"
        )["id"]
        for _ in range(ORDERS)
    ]
    wait_until(lambda: all(account.order(o)["status"] != "pending" for o in originals), timeout_s=SETTLE_TIMEOUT_S)
    rngs = [random.Random(rng.random()) for _ in originals]
    with ThreadPoolExecutor(max_workers=4) as pool:
        made = list(pool.map(partial(race, account), originals, rngs))
    replacements = [r for per_order in made for r in per_order]
    assert replacements, f"no replace got through (seed {SEED})"

    for order_id in originals + replacements:
        ours = wait_until(partial(converged, account, exchange, order_id), timeout_s=SETTLE_TIMEOUT_S)
        if ours["replaces"] is not None and ours["status"] == "rejected":
            # Refused because its original was done first: the original is, here as at the exchange.
            original = account.order(ours["replaces"])
            assert original["status"] in TERMINAL - {"replaced"}, (SEED, original)
        if ours["status"] == "replaced":
            assert ours["replaced_by"] in replacements, (SEED, ours)
    # Each original replaced at most once: one replacement the exchange took per original.
    taken = [r for r in replacements if (exchange.record(r) or {}).get("exchange_order_id")]
    assert len({account.order(r)["replaces"] for r in taken}) == len(taken), SEED
