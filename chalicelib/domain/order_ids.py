"""Order ids: derived from a client's idempotency key, or random; pure."""

from __future__ import annotations

import uuid

# Fixed namespace: the same account and client order id always map to the
# same order id, which makes "create once per idempotency key" a single
# conditional put. The account is part of the name, so two accounts may use
# the same client order id without meeting (or learning of each other).
CLIENT_ORDER_ID_NAMESPACE = uuid.UUID("6f1e4c0a-5a57-4c1b-9a5e-2b7f3d1c9e40")


def order_id_for_client_key(account_id: str, client_order_id: str) -> str:
    # A newline cannot occur in an account id, so no two pairs share a name.
    return str(uuid.uuid5(CLIENT_ORDER_ID_NAMESPACE, f"{account_id}\n{client_order_id}"))


def new_order_id() -> str:
    return str(uuid.uuid4())


def is_order_id(candidate: str) -> bool:
    """Whether candidate is an order id we could have issued (canonical UUID text)."""
    try:
        return str(uuid.UUID(candidate)) == candidate
    except ValueError:
        return False
