"""The event log's page rule (order_events_table.visible_run): a gap stops a page only while it may still fill."""

from __future__ import annotations

import pytest

from chalicelib.adapters.order_events_table import ENTRIES_PER_TRANSACTION, visible_run

pytestmark = pytest.mark.unit


def test_events_without_a_gap_are_all_returned_and_nothing_is_read() -> None:
    asked: list[int] = []

    def stored(sequence: int) -> bool:
        asked.append(sequence)
        return True

    assert visible_run(3, [4, 5, 6], stored) == 3
    assert visible_run(3, [], stored) == 0
    assert asked == []


def test_a_leading_gap_whose_event_is_stored_meanwhile_stops_the_page_before_it() -> None:
    # The Query saw 5 of a transaction half committed; a consistent read sees its 4.
    assert visible_run(3, [5, 6], lambda sequence: sequence == 4) == 0
    assert visible_run(0, [2], lambda sequence: sequence == 1) == 0


def test_a_gap_of_expired_events_is_passed_at_the_start_or_in_the_middle() -> None:
    nothing_stored = lambda sequence: False  # noqa: E731 - TTL deleted them
    assert visible_run(3, [5, 6], nothing_stored) == 2
    assert visible_run(0, [40, 41], nothing_stored) == 2
    assert visible_run(3, [4, 6, 7], nothing_stored) == 3


def test_a_gap_in_the_middle_stops_the_page_only_if_a_missing_event_is_stored() -> None:
    assert visible_run(3, [4, 6, 7], lambda sequence: sequence == 5) == 1
    assert visible_run(3, [4, 6, 9], lambda sequence: sequence == 8) == 2


def test_only_the_found_events_own_transaction_is_looked_at_below_it() -> None:
    # Transactions commit in sequence order: events more than one transaction below the found one
    # were committed before it began, so a page that does not hold them found them expired.
    asked: list[int] = []

    def stored(sequence: int) -> bool:
        asked.append(sequence)
        return False

    found = 1_000
    assert visible_run(0, [found], stored) == 1
    assert sorted(asked) == list(range(found - ENTRIES_PER_TRANSACTION + 1, found))
