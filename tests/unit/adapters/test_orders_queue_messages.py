"""Messages on the orders queue: what each asks for, read back exactly, and what names no order."""

from __future__ import annotations

import pytest

from chalicelib.adapters.queue import OrderAction, OrderMessage, cancel_message, parse_order_message, placement_message

pytestmark = pytest.mark.unit


def test_a_placement_and_a_cancel_request_read_back_as_what_they_ask() -> None:
    assert parse_order_message(placement_message("order-1", "corr-1")) == OrderMessage("order-1", "corr-1")
    assert parse_order_message(cancel_message("order-1")) == OrderMessage("order-1", None, OrderAction.CANCEL)


def test_a_message_from_before_cancels_existed_is_a_placement() -> None:
    assert parse_order_message('{"order_id": "order-1"}').action is OrderAction.PLACE


@pytest.mark.parametrize("body", ["", "not json", "[]", '{"order": "x"}', '{"order_id": 5}'])
def test_malformed_messages_name_no_order(body: str) -> None:
    with pytest.raises(ValueError):
        parse_order_message(body)


def test_an_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown action 'amend'"):
        parse_order_message('{"order_id": "order-1", "action": "amend"}')
