"""HTTP entrypoint helpers that need no storage."""

from __future__ import annotations

import pytest

from chalicelib.entrypoints.http import correlation_id_for

pytestmark = pytest.mark.unit


def test_a_sane_caller_correlation_id_is_kept() -> None:
    assert correlation_id_for({"x-correlation-id": "abc-123:7"}, {"requestId": "gw"}) == "abc-123:7"


@pytest.mark.parametrize("given", ["", "has space", "x" * 129, "bad\nline", "ümlaut"])
def test_an_unusable_one_falls_back_to_the_gateway_request_id(given: str) -> None:
    assert correlation_id_for({"x-correlation-id": given}, {"requestId": "gw-1"}) == "gw-1"


def test_without_anything_a_fresh_id_is_made() -> None:
    first, second = correlation_id_for({}, {}), correlation_id_for({}, {})
    assert first != second
    assert len(first) == 36
