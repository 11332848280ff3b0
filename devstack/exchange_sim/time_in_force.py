"""When an accepted order stops resting: the session close for day orders, expires_at for gtd, never for gtc.

ioc and fok never rest (fill_plans ends them right after their fills), so they have no expiry here.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

from devstack.exchange_sim.config import SimConfig
from devstack.exchange_sim.orders import OrderRequest

ONE_DAY = datetime.timedelta(days=1)


def session_close_after(now: datetime.datetime, config: SimConfig) -> datetime.datetime:
    """The first session close strictly after now (aware, UTC).

    With session_length_s set, sessions close at every whole multiple of it since the Unix
    epoch: the same instants in every process, so a test and the simulator agree on them.
    Otherwise at session_close_utc each day.
    """
    if config.session_length_s is not None:
        length = config.session_length_s
        closes = math.floor(now.timestamp() / length) + 1
        return datetime.datetime.fromtimestamp(closes * length, datetime.UTC)
    close = datetime.time.fromisoformat(config.session_close_utc)
    today = datetime.datetime.combine(now.astimezone(datetime.UTC).date(), close, datetime.UTC)
    return today if today > now else today + ONE_DAY


def expiry_of(order: OrderRequest, config: SimConfig, accepted: datetime.datetime) -> datetime.datetime | None:
    """When an order accepted at `accepted` expires if nothing ended it before; None: it never does."""
    if order.time_in_force == "day":
        return session_close_after(accepted, config)
    if order.time_in_force == "gtd":
        return order.expires_at
    return None


@dataclass(frozen=True)
class Lifetime:
    """How long a resting order may rest, from the moment its plan is drawn (acceptance, or a stop's trigger)."""

    # Until its expiry (session close or expires_at; at most 0 when that has passed); None: gtc.
    expires_in_s: float | None = None
    # limit_ttl_s, for day limit orders: they also expire this long after their `new` (or trigger).
    ttl_s: float | None = None

    def deadline_s(self, acknowledged_after_s: float) -> float | None:
        """Seconds from the plan's start to its `expired` report, given when its `new` comes; None: none comes."""
        candidates = [self.expires_in_s] if self.expires_in_s is not None else []
        if self.ttl_s is not None:
            candidates.append(acknowledged_after_s + self.ttl_s)
        return min(candidates) if candidates else None


def lifetime_of(
    order: OrderRequest, config: SimConfig, expiry: datetime.datetime | None, now: datetime.datetime
) -> Lifetime:
    """The lifetime of a plan drawn now, for an order that expires at `expiry` (expiry_of)."""
    expires_in_s = None if expiry is None else (expiry - now).total_seconds()
    # The TTL is the venue's shortcut for day limit orders alone: a stop-limit waiting for its
    # trigger is not one yet (once triggered, its plan is drawn for the limit order it became).
    ttl_s = config.limit_ttl_s if order.type == "limit" and order.time_in_force == "day" else None
    return Lifetime(expires_in_s, ttl_s)
