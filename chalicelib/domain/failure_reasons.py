"""What clients are told about why an order failed or was rejected; pure."""

from __future__ import annotations

from typing import Final, Literal, get_args

# What clients are told about a failed order (failure_reason): a fixed set, so
# no exchange or transport text (hosts, error bodies) reaches them. The
# stored detail stays in last_error and in the logs, for operators.
ClientFailureReason = Literal[
    "rejected by the exchange", "exchange unreachable", "placement failed", "too late to replace"
]
# A replacement the exchange refused because its original was done first (filled, canceled, expired).
TOO_LATE_TO_REPLACE: Final = "too late to replace"
CLIENT_FAILURE_REASONS: tuple[ClientFailureReason, ...] = get_args(ClientFailureReason)


def client_failure_reason(stored: str | None) -> ClientFailureReason | None:
    """The client-facing reason for a stored failure detail (placement.py and placement_verdict.py write those)."""
    if stored is None:
        return None
    if stored.startswith(TOO_LATE_TO_REPLACE):
        return TOO_LATE_TO_REPLACE
    if stored.startswith("rejected by the exchange"):
        return "rejected by the exchange"
    if stored.startswith("exchange unavailable"):
        return "exchange unreachable"
    return "placement failed"
