"""Settings of every function, read from the environment once and validated as a typed model.

A frozen dataclass with a bound per field rather than pydantic-settings (or
attrs): every function reads settings on its cold start, and pydantic (a
model class built at import) costs more than the authorizer, the placement
and the sweep otherwise import altogether, and attrs ~10 ms more than this
(measured with bench/cold_start.py). The checks are few: a type to parse the
environment's text into, and bounds.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

# Defaults name the local stack's resources (infra/resources.yaml with its
# default ResourcePrefix), so `chalice local` and the runner need no setup.
DEFAULT_PREFIX = "brokerage-local"


def _whole_number(value: Any) -> int:
    # int() would truncate 2.5 to 2; a count given as a fraction is a mistake.
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value)


def _is_loopback_host(host: str) -> bool:
    # urlsplit gives [::1] as "::1"; a name other than localhost may resolve anywhere.
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _http_url(value: Any) -> str:
    # The venue gets orders and the credential: in the clear only over loopback (the local stack).
    text = str(value).strip()
    parts = urlsplit(text)
    if not parts.hostname or not (
        parts.scheme == "https" or (parts.scheme == "http" and _is_loopback_host(parts.hostname))
    ):
        raise ValueError(text)
    return text


@dataclass(frozen=True)
class _Rule:
    """How one setting is read: parsed from text (or taken as a value of its type), then held to its bounds."""

    parse: Callable[[Any], Any]
    kind: str  # what the error calls a value that does not parse
    minimum: Any = None
    above: Any = None  # exclusive minimum
    maximum: Any = None
    min_length: int = 0

    def apply(self, name: str, value: Any) -> Any:
        variable = name.upper()
        try:
            parsed = self.parse(value)
            # NaN passes every bound (each comparison is False): refused as no number at all.
            if isinstance(parsed, float | Decimal) and math.isnan(parsed):
                raise ValueError(value)
        except (ValueError, TypeError, InvalidOperation):
            raise ValueError(f"{variable}: {value!r} is not a valid {self.kind}") from None
        if len(str(parsed)) < self.min_length:
            raise ValueError(f"{variable}: {parsed!r} is shorter than {self.min_length} characters")
        for broken, bound in (
            (self.minimum is not None and parsed < self.minimum, f">= {self.minimum}"),
            (self.above is not None and parsed <= self.above, f"> {self.above}"),
            (self.maximum is not None and parsed > self.maximum, f"<= {self.maximum}"),
        ):
            if broken:
                raise ValueError(f"{variable} must be {bound}: {parsed}")
        return parsed


def _setting(default: Any, rule: _Rule) -> Any:
    return dataclasses.field(default=default, metadata={"rule": rule})


def _text(default: str, min_length: int) -> Any:
    return _setting(default, _Rule(str, "text", min_length=min_length))


def _integer(default: int, minimum: int, maximum: int) -> Any:
    return _setting(default, _Rule(_whole_number, "integer", minimum=minimum, maximum=maximum))


def _real(default: float, above: float, maximum: float) -> Any:
    return _setting(default, _Rule(float, "number", above=above, maximum=maximum))


def _decimal(default: str, above: str, maximum: str) -> Any:
    return _setting(Decimal(default), _Rule(Decimal, "decimal", above=Decimal(above), maximum=Decimal(maximum)))


def _url(default: str) -> Any:
    return _setting(
        default, _Rule(_http_url, "https:// URL (http:// only to a loopback host: 127.0.0.0/8, localhost, [::1])")
    )


@dataclass(frozen=True, init=False)
class Settings:
    """Everything a function may be configured with; nothing else reads os.environ.

    `Settings()` reads each field from the environment variable of its name in
    any case (ORDERS_TABLE_NAME), keyword arguments win over the environment,
    and a value that does not parse or is out of bounds raises ValueError
    naming the variable (every such variable, not only the first).
    """

    orders_table_name: str = _text(f"{DEFAULT_PREFIX}-orders", min_length=3)
    orders_queue_name: str = _text(f"{DEFAULT_PREFIX}-orders", min_length=1)
    executions_stream_name: str = _text(f"{DEFAULT_PREFIX}-executions", min_length=1)
    executions_table_name: str = _text(f"{DEFAULT_PREFIX}-executions", min_length=3)
    api_keys_table_name: str = _text(f"{DEFAULT_PREFIX}-api-keys", min_length=3)
    # Each account's pre-trade risk limits (one item per account; absent ones: the defaults below).
    accounts_table_name: str = _text(f"{DEFAULT_PREFIX}-accounts", min_length=3)
    # The value of the stack's shared API Gateway key (infra/operations.yaml FallbackUsageKey, in the
    # default limit's usage plan): the authorizer's usage identifier for an account without a key of
    # its own. Set on AWS only (the authorizer's environment); empty: no fallback (locally).
    fallback_usage_key: str = _text("", min_length=0)
    executions_failed_queue_name: str = _text(f"{DEFAULT_PREFIX}-executions-failed", min_length=1)
    # Where the orders table's stream consumer sets aside the records it can never process (with why).
    order_events_failed_queue_name: str = _text(f"{DEFAULT_PREFIX}-order-events-failed", min_length=1)
    # Where a placement whose order the exchange confirmed it never got ends up
    # (the orders queue's redrive target, written to by the placement function).
    orders_dead_letter_queue_name: str = _text(f"{DEFAULT_PREFIX}-orders-dlq", min_length=1)
    # Where the reconciler keeps its cursor between runs (one item, beside the feed bridge's).
    feed_checkpoints_table_name: str = _text(f"{DEFAULT_PREFIX}-feed-checkpoints", min_length=3)
    executions_batch_size: int = _integer(100, 1, 10_000)
    executions_batch_window_s: int = _integer(1, 0, 300)

    # Order events (docs/architecture.md, "Order events"): the log GET /events pages and the
    # WebSocket stream replays, and the stream's connections and connect tokens.
    order_events_table_name: str = _text(f"{DEFAULT_PREFIX}-order-events", min_length=3)
    stream_connections_table_name: str = _text(f"{DEFAULT_PREFIX}-stream-connections", min_length=3)
    # The orders table's DynamoDB stream, which the order events are derived from. On AWS the
    # template points the mapping at the table's StreamArn; locally the stack output sets it.
    orders_table_stream_arn: str = _text(
        f"arn:aws:dynamodb:us-east-1:000000000000:table/{DEFAULT_PREFIX}-orders/stream/local", min_length=1
    )
    order_events_batch_size: int = _integer(100, 1, 1000)
    # Events are kept at least 7 days (the contract); TTL deletes them some time after this.
    order_events_retention_days: int = _integer(8, 7, 365)
    # Where functions post to and close WebSocket connections: API Gateway's management API
    # (https://{api-id}.execute-api.{region}.amazonaws.com/{stage}); locally the stream server's.
    stream_management_url: str = _url("http://127.0.0.1:8004")
    # How long a token of POST /stream/tokens may be used to connect (once).
    stream_token_ttl_s: int = _integer(300, 10, 3600)

    exchange_url: str = _url("http://127.0.0.1:8001")
    # The venue credential (sent as a bearer token on order entry), in Secrets Manager.
    exchange_credential_secret_name: str = _text(f"{DEFAULT_PREFIX}-exchange-credential", min_length=1)
    exchange_timeout_s: float = _real(5.0, above=0, maximum=60)

    # Attempts must match the queue's RedrivePolicy maxReceiveCount (infra
    # parameter PlacementMaxAttempts): the message reaches the DLQ right after
    # the attempt that marks the order failed.
    placement_max_attempts: int = _integer(3, 1, 100)
    placement_backoff_base_s: int = _integer(2, 1, 900)
    placement_backoff_max_s: int = _integer(900, 1, 43_200)
    placement_batch_size: int = _integer(10, 1, 10)
    placement_batch_window_s: int = _integer(0, 0, 300)
    # Concurrent placement batches (the SQS mapping's ScalingConfig, AWS: 2..1000): 50 x 10 orders per
    # 0.5 s exchange round trip is 1,000 orders/s, while leaving most of an account's default 1,000
    # Lambda concurrency to the API, and bounding the burst a drained backlog sends to the exchange.
    placement_max_concurrency: int = _integer(50, 2, 1000)

    # Business bounds on what one order may ask for (422 naming the bound);
    # the request model keeps fixed sanity bounds above these.
    max_order_quantity: int = _integer(1_000_000, 1, 1_000_000_000)
    # (RUF009 takes the field definition for a shared mutable default.)
    max_limit_price: Decimal = _decimal("1000000", above="0", maximum="1000000000")  # noqa: RUF009

    # Pre-trade risk limits of an account the operator has set none for (`python -m ops accounts
    # limits`). A retail broker's: one order above 100,000 (in the instrument's currency) is rare
    # for a retail client and is what a fat finger or a leaked key looks like; the few who need
    # more get their own limit. Market orders are valued at the venue's reference price.
    default_max_order_notional: Decimal = _decimal("100000", above="0", maximum="1e18")  # noqa: RUF009
    # A retail account rarely works more than a few dozen orders at once; 100 leaves room, and
    # stops a script gone wrong from filling the book. A soft limit (see adapters/open_orders.py).
    default_max_open_orders: int = _integer(100, 0, 10_000_000)
    # Catches a penny stock's huge quantity that the notional limit lets through. At most
    # max_order_quantity above (the hard bound on every order, checked when the request is read).
    default_max_order_quantity: int = _integer(10_000, 1, 1_000_000_000)

    # An order still pending this long after its last sign of progress is
    # re-enqueued by the sweep: long enough that a healthy queue has long
    # picked it up, short enough that a lost message costs little delay.
    pending_sweep_after_s: int = _integer(60, 1, 86_400)
    pending_sweep_batch: int = _integer(500, 1, 10_000)
    # A pending_cancel order's cancel request goes to the queue, and to the
    # exchange, at most once per this many seconds, however often the client
    # repeats its DELETE; the sweep re-sends a cancel stuck longer.
    cancel_resend_interval_s: int = _integer(5, 1, 900)  # at most SQS's longest message delay

    # Orders one GET /orders request may read, matching its filters or not. Without a bound a
    # selective filter (a rare status, an instrument) reads page after page of an account's
    # history until it finds `limit` matches, up to the Lambda timeout: a few such requests a
    # second hold the account's concurrency that placement needs. 1,000 items (~1 MB, a few
    # Query calls) answer in well under a second; a page cut short carries a cursor instead.
    list_max_items_read: int = _integer(1_000, 1, 100_000)

    # The reconciler compares open orders, and orders failed within the
    # window, with the exchange's status; at most reconcile_batch orders (one
    # exchange call each) per run, the rest from its cursor in later runs.
    reconcile_interval_min: int = _integer(5, 1, 1440)
    # At most what fits the function's 120 s timeout at a 0.5 s exchange round trip on 8 threads.
    reconcile_batch: int = _integer(200, 1, 1500)
    reconcile_failed_window_h: int = _integer(24, 1, 24 * 30)
    # An order that changed this recently is left for a later pass: its execution reports may still
    # be on their way (feed, bridge, stream, consumer; seconds under load), and a fill merged from the
    # status answer first is a fill whose event carries no execution. Lost reports wait this long more.
    reconcile_settle_s: int = _integer(60, 0, 3_600)

    # Outbound AWS calls on the request path give up quickly: the API stays
    # fast while a dependency is down, and the sweep covers a lost SQS send.
    aws_connect_timeout_s: float = _real(1.0, above=0, maximum=30)
    aws_read_timeout_s: float = _real(3.0, above=0, maximum=60)
    aws_max_attempts: int = _integer(2, 1, 10)

    def __init__(self, **overrides: Any) -> None:
        unknown = sorted(set(overrides) - set(setting_names()))
        if unknown:
            raise TypeError(f"Settings has no field {', '.join(unknown)}")
        # Variable names in any case, as pydantic-settings read them before.
        environment = {name.lower(): value for name, value in os.environ.items()}
        problems = []
        for field in dataclasses.fields(self):
            given = overrides.get(field.name, environment.get(field.name, field.default))
            try:
                # Frozen: the dataclass's own __init__ would set fields the same way.
                object.__setattr__(self, field.name, field.metadata["rule"].apply(field.name, given))
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))


@functools.cache
def setting_names() -> tuple[str, ...]:
    """The fields of Settings, each read from the environment variable of its name upper-cased."""
    return tuple(field.name for field in dataclasses.fields(Settings))


class ConfigurationError(RuntimeError):
    """The environment does not describe a valid configuration."""


@functools.cache
def get_settings() -> Settings:
    """Settings, validated once per process (a Lambda cold start)."""
    try:
        return Settings()
    except ValueError as exc:
        raise ConfigurationError(f"invalid configuration: {exc}") from exc
