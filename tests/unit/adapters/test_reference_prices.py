"""The reference-price adapter's reading of the venue's answers, its cache and its credential (a scripted pool)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import urllib3

from chalicelib.adapters.reference_prices import HttpReferencePrices, ReferencePriceUnavailable
from chalicelib.adapters.venue_credential import StaticCredential

pytestmark = pytest.mark.unit

APPLE = "US0378331005"


@dataclass
class Answer:
    status: int
    data: bytes


@dataclass
class ScriptedPool:
    """Answers in order; records each request's URL and headers."""

    answers: list[Answer | Exception]
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def request(self, method: str, url: str, headers: dict[str, str], **_: Any) -> Answer:
        assert method == "GET"
        self.requests.append((url, headers))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def price_answer(price: object, instrument: str = APPLE) -> Answer:
    return Answer(200, json.dumps({"instrument": instrument, "price": price}).encode())


def prices(pool: ScriptedPool, now: list[float] | None = None, **options: Any) -> HttpReferencePrices:
    clock = now or [0.0]
    return HttpReferencePrices("http://127.0.0.1:9/", pool=pool, clock=lambda: clock[0], **options)  # type: ignore[arg-type]


def test_a_price_is_read_and_kept_a_minute() -> None:
    now = [0.0]
    pool = ScriptedPool([price_answer("187.25"), price_answer("190.00")])
    source = prices(pool, now)
    assert source.price_of(APPLE) == Decimal("187.25")
    now[0] = 59.0
    assert source.price_of(APPLE) == Decimal("187.25")
    now[0] = 60.0
    assert source.price_of(APPLE) == Decimal("190.00")
    assert [url for url, _ in pool.requests] == [f"http://127.0.0.1:9/reference-prices/{APPLE}"] * 2


def test_the_instrument_is_one_quoted_path_segment() -> None:
    pool = ScriptedPool([price_answer("1.00", instrument="A/B C")])
    prices(pool).price_of("A/B C")
    assert pool.requests[0][0].endswith("/reference-prices/A%2FB%20C")


@pytest.mark.parametrize(
    "answer",
    [
        Answer(503, b'{"error": "down"}'),
        Answer(404, b"{}"),
        Answer(200, b"not json"),
        price_answer("0"),
        price_answer("-1"),
        price_answer("NaN"),
        price_answer("Infinity"),
        price_answer("1e400"),
        price_answer(187.25),  # a number, not the string the venue sends
        price_answer("1" * 40),
        price_answer("10.00", instrument="DE0007164600"),  # another instrument's answer
        urllib3.exceptions.ReadTimeoutError(None, "/", "timed out"),  # type: ignore[arg-type]
        urllib3.exceptions.NewConnectionError(None, "refused"),  # type: ignore[arg-type]
    ],
)
def test_no_usable_answer_is_unavailable_and_not_cached(answer: Answer | Exception) -> None:
    pool = ScriptedPool([answer, price_answer("5.00")])
    source = prices(pool)
    with pytest.raises(ReferencePriceUnavailable):
        source.price_of(APPLE)
    assert source.price_of(APPLE) == Decimal("5.00")


def test_the_venue_credential_is_sent_as_order_entry_sends_it() -> None:
    pool = ScriptedPool([price_answer("5.00")])
    prices(pool, credential=StaticCredential("s3cret")).price_of(APPLE)
    assert pool.requests[0][1] == {"Authorization": "Bearer s3cret"}


def test_a_refused_credential_is_read_again_once() -> None:
    pool = ScriptedPool([Answer(401, b"{}"), Answer(401, b"{}")])
    with pytest.raises(ReferencePriceUnavailable, match="401"):
        prices(pool, credential=StaticCredential("old")).price_of(APPLE)
    assert len(pool.requests) == 2
