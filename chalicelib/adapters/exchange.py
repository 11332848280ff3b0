"""The stock exchange's order entry, cancels and order status queries, over HTTP."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote

import urllib3

from chalicelib.adapters.venue_credential import CredentialUnavailable, VenueCredential
from chalicelib.clock import Clock, utc_now
from chalicelib.domain.model import Order, OrderStatus, VenueOrderState

log = logging.getLogger(__name__)

_ORDER_REJECTED = frozenset({400, 422})
_UNAUTHORIZED = 401


class ExchangeUnavailable(Exception):
    """The attempt did not reach a decision at the exchange; trying again may succeed."""


class ExchangeRejected(Exception):
    """The exchange refused the order for good; trying again cannot help."""


class ReplaceTooLate(ExchangeRejected):
    """The exchange refused a replace because the original was done first (filled, canceled, expired)."""


@dataclass(frozen=True)
class ExchangeAck:
    exchange_order_id: str | None
    # True when the exchange already had our client order id: a previous
    # attempt (ours, or a racing worker's) got through, so this one is done.
    duplicate: bool = False


class CancelOutcome(StrEnum):
    CANCEL_ACCEPTED = "cancel_accepted"  # the exchange will confirm through the feed
    TOO_LATE = "too_late"  # the order is already done at the exchange; the feed says how
    UNKNOWN_ORDER = "unknown_order"  # the exchange never accepted this client order id


# The exchange's own 404 for an order it never accepted. Any other 404 (a wrong base URL, a
# proxy) says nothing about the order, and taking it for a verdict would be final.
_UNKNOWN_ORDER_ERROR = "unknown order"

# The exchange's status words (those its execution reports lead to) in our statuses.
_VENUE_STATUSES = {
    "new": OrderStatus.PLACED,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
    "replaced": OrderStatus.REPLACED,
}
# The start of the exchange's 409 to a replace whose original is done; its other 409 is a duplicate id.
_TOO_LATE_TO_REPLACE_ERROR = "too late to replace"


class Exchange(Protocol):
    def place(self, order: Order) -> ExchangeAck:
        """Send the order (a replacement: as a cancel/replace of its original).

        An order claimed for placement is never sent once its lease (placing_until) has less
        than one exchange call left: ExchangeUnavailable instead, nothing sent."""

    def cancel(self, order_id: str) -> CancelOutcome: ...

    def status(self, order_id: str) -> VenueOrderState | None:
        """The exchange's state of our order, None if it definitely does not know it; ExchangeUnavailable if
        no verdict came back (the order may still exist)."""


class HttpExchange:
    """Order entry, cancels and status queries over the simulator's JSON protocol.

    Our order id is the client order id (ClOrdID). Every call carries the
    venue credential as `Authorization: Bearer <credential>` (none without a
    credential: a venue that asks for none, as in the unit tests).

    A claimed order is sent only while the rest of its lease covers a whole
    call (`_send_by`): reading the credential (Secrets Manager, waiting for
    another thread's read) and a refusal's second send happen after
    placement's own check, and a send that could land after the lease could
    land after a cancel took "unknown order" for final.
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        pool: urllib3.PoolManager | None = None,
        *,
        credential: VenueCredential | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = urllib3.Timeout(connect=min(timeout_s, 2.0), read=timeout_s)
        # The longest one call can take, as bootstrap.exchange_call_s counts it: a request
        # sent later than this before the lease ends might reach the exchange after it.
        self._call_budget = timedelta(seconds=min(timeout_s, 2.0) + timeout_s)
        self._clock = clock
        # Retries belong to the queue (backoff, attempts, DLQ), not to the HTTP client.
        self._pool = pool or urllib3.PoolManager(maxsize=16, retries=False)
        self._credential = credential

    def _request(
        self, method: str, url: str, body: bytes | None = None, send_by: datetime | None = None
    ) -> urllib3.BaseHTTPResponse:
        """One call with the credential; refused (401), once more with the credential read again.

        Sending again is safe: a venue that refuses the caller has not looked
        at the order. Still refused: ExchangeUnavailable, never a verdict on
        the order (placement retries, and the order stays pending meanwhile),
        and an error in the log for an operator: the credential is wrong.
        Neither send goes out after send_by (ExchangeUnavailable instead).
        """
        credential = self._credential_or_unavailable(lambda c: c.current())
        self._check_send_by(send_by)
        response = self._send(method, url, body, credential)
        if response.status != _UNAUTHORIZED or credential is None:
            return response
        refused = credential
        credential = self._credential_or_unavailable(lambda c: c.refreshed(refused))
        self._check_send_by(send_by)
        response = self._send(method, url, body, credential)
        if response.status == _UNAUTHORIZED:
            log.error(
                "the exchange refused our credential (HTTP 401) on %s, also after reading it again: "
                "check the venue credential secret",
                method,
            )
            raise ExchangeUnavailable("the exchange refused our credential (HTTP 401)")
        return response

    def _check_send_by(self, send_by: datetime | None) -> None:
        # Right before the send, after whatever waited (a credential read, the lock around it, a refusal).
        if send_by is not None and self._clock() > send_by:
            log.warning("placement not sent: it would be sent after the placement lease (slow credential read?)")
            raise ExchangeUnavailable("not sent: it would be sent after the placement lease")

    def _send_by(self, order: Order) -> datetime | None:
        """The last moment a send of this order still lands within its claim's lease; None if not claimed."""
        return None if order.placing_until is None else order.placing_until - self._call_budget

    def _credential_or_unavailable(self, read: Callable[[VenueCredential], str]) -> str | None:
        if self._credential is None:
            return None
        try:
            return read(self._credential)
        except CredentialUnavailable as exc:
            log.error("venue credential unavailable: %s", exc)
            raise ExchangeUnavailable(f"venue credential unavailable: {exc}") from exc

    def _send(self, method: str, url: str, body: bytes | None, credential: str | None) -> urllib3.BaseHTTPResponse:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if credential is not None:
            headers["Authorization"] = f"Bearer {credential}"
        try:
            return self._pool.request(method, url, body=body, headers=headers, timeout=self._timeout)
        except urllib3.exceptions.HTTPError as exc:
            raise ExchangeUnavailable(f"exchange unreachable: {type(exc).__name__}") from exc

    def place(self, order: Order) -> ExchangeAck:
        terms = order.terms
        body = {
            "client_order_id": order.id,
            "instrument": terms.instrument,
            "side": terms.side.value,
            "type": terms.type.value,
            "quantity": terms.quantity,
            # Prices have at most two decimals, which a JSON number carries exactly enough.
            "limit_price": None if terms.limit_price is None else float(terms.limit_price),
            "stop_price": None if terms.stop_price is None else float(terms.stop_price),
            "time_in_force": terms.time_in_force.value,
            # Stored in UTC to the second: exactly the "2026-12-02T15:00:00Z" the exchange reads.
            "expires_at": None if terms.expires_at is None else _utc_text(terms.expires_at),
        }
        # A replacement goes as a cancel/replace (FIX 35=G) of its original, whose id is OrigClOrdID.
        url = f"{self._base_url}/orders"
        if order.replaces is not None:
            url = f"{url}/{quote(order.replaces, safe='')}/replace"
        response = self._request("POST", url, json.dumps(body).encode(), self._send_by(order))
        payload = _json_or_empty(response.data)
        reason = str(payload.get("error") or f"HTTP {response.status}")
        if order.replaces is not None and response.status == 409 and reason.startswith(_TOO_LATE_TO_REPLACE_ERROR):
            raise ReplaceTooLate(reason)
        if order.replaces is not None and response.status == 404 and reason == _UNKNOWN_ORDER_ERROR:
            # The exchange's own verdict that it never had the original: nothing to replace, for good.
            raise ExchangeRejected(f"the original order is unknown to the exchange ({reason})")
        if response.status in (200, 201):
            return ExchangeAck(exchange_order_id=payload.get("exchange_order_id"))
        if response.status == 409:
            return ExchangeAck(exchange_order_id=payload.get("exchange_order_id"), duplicate=True)
        # Only a verdict on the order itself is final. Throttling (429), a
        # timeout (408), or our own configuration (401/403/404: wrong URL or
        # credentials) can all be fixed by waiting or by an operator.
        if response.status in _ORDER_REJECTED:
            raise ExchangeRejected(reason)
        raise ExchangeUnavailable(reason)

    def cancel(self, order_id: str) -> CancelOutcome:
        """Ask the exchange to cancel our order; ExchangeUnavailable when no verdict came back."""
        # Quoted whole (slashes too): the id is one path segment, and the exchange decodes it.
        response = self._request("DELETE", f"{self._base_url}/orders/{quote(order_id, safe='')}")
        error = _json_or_empty(response.data).get("error")
        if response.status == 200:
            return CancelOutcome.CANCEL_ACCEPTED
        if response.status == 409:
            return CancelOutcome.TOO_LATE
        if response.status == 404 and error == _UNKNOWN_ORDER_ERROR:
            return CancelOutcome.UNKNOWN_ORDER
        # Nothing else is a verdict on the cancel, and a failed cancel changed nothing at the
        # exchange, so asking again is always safe: 5xx, throttling (429), and even a 400 or
        # 405 from a misconfigured URL are for time or an operator to fix.
        raise ExchangeUnavailable(str(error or f"HTTP {response.status}"))

    def status(self, order_id: str) -> VenueOrderState | None:
        """The exchange's state of our order (FIX OrderStatusRequest); None only on its verdict "unknown order"."""
        response = self._request("GET", f"{self._base_url}/orders/{quote(order_id, safe='')}")
        payload = _json_or_empty(response.data)
        if response.status == 404 and payload.get("error") == _UNKNOWN_ORDER_ERROR:
            return None
        if response.status != 200:
            # None would be final (the caller may fail the order on it), so anything short of
            # the exchange's own verdict, a 5xx, throttling or another 404, is no answer.
            raise ExchangeUnavailable(str(payload.get("error") or f"HTTP {response.status}"))
        try:
            return _venue_order_state(order_id, payload)
        except ValueError as exc:
            raise ExchangeUnavailable(f"unreadable order status from the exchange: {exc}") from exc


_STATUS_FIELDS = ("client_order_id", "exchange_order_id", "status", "cum_qty", "leaves_qty", "avg_price")


def _venue_order_state(order_id: str, payload: dict[str, Any]) -> VenueOrderState:
    """A 200 answer of the status query about order_id; ValueError saying what is wrong if it is not one."""
    missing = [name for name in _STATUS_FIELDS if name not in payload]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    if payload["client_order_id"] != order_id:
        # Answers mixed up on the way (a proxy, a cache): another order's state must never merge into ours.
        raise ValueError(f"the answer is about order {payload['client_order_id']!r}, not {order_id!r}")
    status = _VENUE_STATUSES.get(payload["status"]) if isinstance(payload["status"], str) else None
    if status is None:
        raise ValueError(f"unknown status {payload['status']!r}")
    exchange_order_id = payload["exchange_order_id"]
    if not isinstance(exchange_order_id, str) or not exchange_order_id:
        raise ValueError(f"exchange_order_id must be a non-empty string, got {exchange_order_id!r}")
    return VenueOrderState(
        exchange_order_id=exchange_order_id,
        status=status,
        cum_qty=_quantity(payload, "cum_qty"),
        leaves_qty=_quantity(payload, "leaves_qty"),
        avg_price=_price(payload["avg_price"]),
    )


def _quantity(payload: dict[str, Any], name: str) -> int:
    value = payload[name]
    # bool is an int in Python, but `true` is no quantity.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number of at least 0, got {value!r}")
    return value


def _price(value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"avg_price must be a positive number or null, got {value!r}")
    # Through str: the number's shortest form (187.2533), not the binary float's expansion.
    return Decimal(str(value))


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _json_or_empty(data: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(data)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
