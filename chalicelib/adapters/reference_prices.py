"""The venue's reference price of an instrument (its market data), over HTTP, kept a minute per instrument.

A market order has no price of its own; its notional for the pre-trade risk
check is the reference price x quantity. GET {EXCHANGE_URL}/reference-prices/
{instrument} answers {"instrument": ..., "price": "123.45"} (docs/emulators.md).
With no usable answer the caller gets ReferencePriceUnavailable and refuses
the market order (fail closed): an unchecked market order is exactly the risk
the limit guards against. Limit orders never ask.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Protocol
from urllib.parse import quote

import urllib3

from chalicelib.adapters.venue_credential import CredentialUnavailable, VenueCredential

# On the request path of POST /orders: a venue that does not answer within this
# costs a market order a 503 quickly, rather than most of the API function's 10 s.
REFERENCE_PRICE_TIMEOUT_S = 1.0
# A reference price a minute old is close enough to bound a market order's size
# (the check is against a limit, not a fill), and one read a minute per instrument
# per function spares the venue a request for every order.
REFERENCE_PRICE_TTL_S = 60.0
REFERENCE_PRICE_CACHE_MAX_INSTRUMENTS = 10_000
# Sane bounds on what the venue sends: digits enough for any price, never NaN, Infinity or 1e400.
_MAX_PRICE_TEXT = 32
_MAX_PRICE_DIGITS = 12  # before the point: far above any share's price
_UNAUTHORIZED = 401


class ReferencePriceUnavailable(Exception):
    """No usable reference price right now (venue unreachable, refusing, or answering nonsense)."""


class ReferencePrices(Protocol):
    def price_of(self, instrument: str) -> Decimal:
        """The venue's reference price (> 0); ReferencePriceUnavailable saying why if there is none."""


class HttpReferencePrices:
    """The venue's market-data endpoint, with the venue credential as order entry sends it (adapters/exchange.py)."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float = REFERENCE_PRICE_TIMEOUT_S,
        pool: urllib3.PoolManager | None = None,
        *,
        credential: VenueCredential | None = None,
        ttl_s: float = REFERENCE_PRICE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        # No retries: a retry would only add to the client's wait; the client may send the order again.
        self._pool = pool or urllib3.PoolManager(maxsize=8, retries=False)
        self._credential = credential
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: dict[str, tuple[float, Decimal]] = {}
        self._lock = threading.Lock()

    def price_of(self, instrument: str) -> Decimal:
        now = self._clock()
        with self._lock:
            hit = self._cached.get(instrument)
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        price = self._fetch(instrument)
        with self._lock:
            if len(self._cached) >= REFERENCE_PRICE_CACHE_MAX_INSTRUMENTS:
                self._cached.clear()
            self._cached[instrument] = (now, price)
        return price

    def _fetch(self, instrument: str) -> Decimal:
        url = f"{self._base_url}/reference-prices/{quote(instrument, safe='')}"
        credential = self._read_credential(lambda c: c.current())
        response = self._get(url, credential)
        if response.status == _UNAUTHORIZED and credential is not None:
            refused = credential
            response = self._get(url, self._read_credential(lambda c: c.refreshed(refused)))
        if response.status != 200:
            raise ReferencePriceUnavailable(f"the exchange answered HTTP {response.status} for {instrument}")
        return _price(instrument, response.data)

    def _read_credential(self, read: Callable[[VenueCredential], str]) -> str | None:
        if self._credential is None:
            return None
        try:
            return read(self._credential)
        except CredentialUnavailable as exc:
            raise ReferencePriceUnavailable(f"venue credential unavailable: {exc}") from exc

    def _get(self, url: str, credential: str | None) -> urllib3.BaseHTTPResponse:
        headers = {} if credential is None else {"Authorization": f"Bearer {credential}"}
        try:
            return self._pool.request("GET", url, headers=headers, timeout=self._timeout)
        except urllib3.exceptions.HTTPError as exc:
            raise ReferencePriceUnavailable(f"exchange unreachable: {type(exc).__name__}") from exc


def _price(instrument: str, data: bytes) -> Decimal:
    """The price in a 200 answer about instrument; ReferencePriceUnavailable if it is not one."""
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    if not isinstance(payload, dict) or payload.get("instrument") != instrument:
        # Mixed-up answers (a proxy, a cache) must never price another instrument's order.
        raise ReferencePriceUnavailable(f"the exchange's answer is not a reference price of {instrument}")
    text = payload.get("price")
    try:
        price = Decimal(text) if isinstance(text, str) and len(text) <= _MAX_PRICE_TEXT else None
    except InvalidOperation:
        price = None
    if price is None or not price.is_finite() or price <= 0 or price.adjusted() > _MAX_PRICE_DIGITS:
        raise ReferencePriceUnavailable(f"the exchange's reference price of {instrument} is unusable: {text!r}")
    return price
