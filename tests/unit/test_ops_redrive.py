"""The operator tool's redrive policy, reopening records and escaping, against in-memory fakes (issue 15)."""

from __future__ import annotations

import dataclasses
import io
from datetime import timedelta
from decimal import Decimal

import pytest

from chalicelib.adapters.queue import placement_message
from chalicelib.domain.model import Order, OrderStatus, OrderTerms, OrderType, Side
from ops.aws import Message
from ops.cli import _render_order
from ops.redrive import (
    DEFAULT_MAX_AGE,
    Action,
    PlacementRedrive,
    ReopenPolicy,
    operator_identity,
    parse_age,
)
from ops.target import Target
from ops.views import history, order_fields, printable, printable_view
from tests.contracts.order_repository import gtd_stop_limit_terms
from tests.unit.fakes import FakeQueue, FakeRepository, Fakes
from tests.unit.helpers import T0, Clock

pytestmark = pytest.mark.unit

TARGET = Target(stage="local", prefix="brokerage-test", endpoint_url="http://127.0.0.1:1")
ARN = "arn:aws:sts::123456789012:assumed-role/operators/alice"


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository()


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue()


def failed_order(
    repo: FakeRepository,
    order_type: OrderType = OrderType.LIMIT,
    created_ago: timedelta = timedelta(),
    terms: OrderTerms | None = None,
) -> Order:
    price = Decimal("99.5") if order_type is OrderType.LIMIT else None
    terms = terms or OrderTerms(order_type, Side.BUY, "US0378331005", 10, price)
    order = Order.create("alice", terms, T0 - created_ago)
    failed = dataclasses.replace(
        order, status=OrderStatus.FAILED, failure_reason="exchange unavailable after 3 attempts"
    )
    return repo.add(failed, sweep_after=T0)


def decide(repo: FakeRepository, queue: FakeQueue, order: Order, policy: ReopenPolicy) -> tuple[Action, str]:
    dependencies = Fakes(orders=repo, queue=queue, clock=Clock(T0)).dependencies()
    message = Message("m-1", "r-1", placement_message(order.id), 3, None)
    decision = PlacementRedrive(TARGET, dependencies, dry_run=False, policy=policy)(message)
    return decision.action, decision.detail


def test_a_recent_limit_order_is_reopened_and_records_who_and_when(repo: FakeRepository, queue: FakeQueue) -> None:
    order = failed_order(repo, created_ago=timedelta(hours=1))
    action, _ = decide(repo, queue, order, ReopenPolicy(operator="alice"))
    assert action is Action.REOPENED
    stored = repo.orders[order.id]
    assert stored.status is OrderStatus.PENDING
    assert [(r.at, r.by, r.earlier_failure) for r in stored.reopenings] == [
        (T0, "alice", "exchange unavailable after 3 attempts")
    ]
    assert queue.sent == [order.id]


def test_a_failed_replacement_is_discarded_never_reopened(repo: FakeRepository, queue: FakeQueue) -> None:
    original = failed_order(repo, created_ago=timedelta(hours=1))
    replacement = dataclasses.replace(failed_order(repo), replaces=original.id)
    repo.orders[replacement.id] = replacement
    action, detail = decide(repo, queue, replacement, ReopenPolicy(operator="alice"))
    assert action is Action.DISCARDED
    assert f"a failed replacement of order {original.id}" in detail
    assert repo.orders[replacement.id].status is OrderStatus.FAILED
    assert queue.sent == []


def test_an_order_older_than_the_max_age_is_refused_with_its_reason(repo: FakeRepository, queue: FakeQueue) -> None:
    order = failed_order(repo, created_ago=DEFAULT_MAX_AGE + timedelta(minutes=1))
    action, detail = decide(repo, queue, order, ReopenPolicy(operator="alice"))
    assert action is Action.REFUSED
    assert "older than --max-age 8h" in detail and "8h 1m ago" in detail
    assert repo.orders[order.id].status is OrderStatus.FAILED
    assert queue.sent == []
    # The operator may widen the window on purpose.
    action, _ = decide(repo, queue, order, ReopenPolicy(operator="alice", max_age=timedelta(days=1)))
    assert action is Action.REOPENED


def test_a_market_order_is_refused_unless_named(repo: FakeRepository, queue: FakeQueue) -> None:
    order = failed_order(repo, OrderType.MARKET)
    other = failed_order(repo, OrderType.MARKET)
    action, detail = decide(
        repo, queue, order, ReopenPolicy(operator="alice", allowed_market_orders=frozenset({other.id}))
    )
    assert action is Action.REFUSED
    assert f"--allow-market {order.id}" in detail
    assert repo.orders[order.id].status is OrderStatus.FAILED
    named = ReopenPolicy(operator="alice", allowed_market_orders=frozenset({order.id}))
    assert decide(repo, queue, order, named)[0] is Action.REOPENED


@pytest.mark.parametrize(
    ("terms", "refused"),
    [
        # A stop becomes a market order when triggered: it fills at today's price too.
        (OrderTerms(OrderType.STOP, Side.BUY, "US0378331005", 10, None, stop_price=Decimal("101.00")), True),
        # A stop-limit is bounded by its limit price, as a limit order is.
        (
            OrderTerms(
                OrderType.STOP_LIMIT, Side.BUY, "US0378331005", 10, Decimal("101.50"), stop_price=Decimal("101.00")
            ),
            False,
        ),
    ],
)
def test_a_stop_order_is_refused_unless_named_as_a_market_order_is(
    repo: FakeRepository, queue: FakeQueue, terms: OrderTerms, refused: bool
) -> None:
    order = failed_order(repo, terms=terms)
    action, detail = decide(repo, queue, order, ReopenPolicy(operator="alice"))
    if refused:
        assert action is Action.REFUSED
        assert "a stop order (a market order once triggered) fills at today's price" in detail
        assert f"--allow-market {order.id}" in detail
        named = ReopenPolicy(operator="alice", allowed_market_orders=frozenset({order.id}))
        assert decide(repo, queue, order, named)[0] is Action.REOPENED
    else:
        assert action is Action.REOPENED


def test_a_named_market_order_is_still_refused_when_too_old(repo: FakeRepository, queue: FakeQueue) -> None:
    order = failed_order(repo, OrderType.MARKET, created_ago=timedelta(days=3))
    named = ReopenPolicy(operator="alice", allowed_market_orders=frozenset({order.id}))
    action, detail = decide(repo, queue, order, named)
    assert action is Action.REFUSED and "3d 0h ago" in detail


@pytest.mark.parametrize(
    ("text", "age"), [("90s", timedelta(seconds=90)), ("30m", timedelta(minutes=30)), ("2d", timedelta(days=2))]
)
def test_ages_are_read_with_their_unit(text: str, age: timedelta) -> None:
    assert parse_age(text) == age


@pytest.mark.parametrize("text", ["", "8", "0h", "-1h", "1.5h", "8 hours", "1w"])
def test_anything_else_is_not_an_age(text: str) -> None:
    with pytest.raises(ValueError, match="not an age"):
        parse_age(text)


def test_the_operator_is_the_aws_caller_on_a_deployed_stage_and_the_name_locally() -> None:
    assert operator_identity(False, None, lambda: ARN) == ARN
    assert operator_identity(False, "alice", lambda: ARN) == f"{ARN} (alice)"
    assert operator_identity(False, "alice", lambda: None) == "alice"  # STS unreachable: the name still says who
    assert operator_identity(True, "alice", lambda: pytest.fail("the emulator's ARN says nothing")) == "alice"
    assert operator_identity(True, None, lambda: None) == "unknown operator"


def test_every_reopening_shows_in_the_history(repo: FakeRepository) -> None:
    order = failed_order(repo)
    once = order.reopened(T0 + timedelta(minutes=1), by="alice").failed(
        "rejected by the exchange: halted", T0 + timedelta(minutes=2)
    )
    twice = once.reopened(T0 + timedelta(minutes=3), by=ARN)
    events = [(e["event"], e["detail"]) for e in history(twice, []) if e["event"] == "reopened"]
    assert events == [
        ("reopened", "by alice; it had failed: exchange unavailable after 3 attempts"),
        ("reopened", f"by {ARN}; it had failed: rejected by the exchange: halted"),
    ]
    assert [r["by"] for r in order_fields(twice)["reopenings"]] == ["alice", ARN]


def test_text_from_the_exchange_the_feed_or_a_client_is_escaped_for_the_terminal() -> None:
    assert printable("exchange unavailable after 3 attempts") == "exchange unavailable after 3 attempts"
    assert printable("\x1b]0;pwned\x07\x1b[2J") == "\\u001b]0;pwned\\u0007\\u001b[2J"
    assert printable("abc\u202edcba") == "abc\\u202edcba"  # no right-to-left override
    assert printable("x" * 2000).endswith("...")
    assert printable_view({"a\nb": ["\x1b[31m", 3, None]}) == {"a\\nb": ["\\u001b[31m", 3, None]}


def rendered(order: Order) -> str:
    """What `python -m ops order` prints for the order, with nothing in its queues."""
    view = {
        "target": "local",
        "order": order_fields(order),
        "history": history(order, []),
        "executions": [],
        "dead_letters": [],
        "failed_executions": [],
        "dead_letters_scan_incomplete": False,
    }
    out = io.StringIO()
    _render_order(printable_view(view), out)
    return out.getvalue()


def test_the_order_view_prints_no_control_characters(repo: FakeRepository) -> None:
    order = failed_order(repo)
    hostile = dataclasses.replace(
        order, last_error="HTTP 502 \x1b[2J\x1b]8;;http://evil\x07", exchange_order_id="X\u202e1"
    )
    text = rendered(hostile)
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "\\u001b[2J" in text


def test_the_order_view_shows_the_time_in_force_expiry_and_stop_price(repo: FakeRepository) -> None:
    terms = gtd_stop_limit_terms()
    order = failed_order(repo, terms=terms)
    fields = order_fields(order)
    assert (fields["time_in_force"], fields["expires_at"], fields["stop_price"], fields["limit_price"]) == (
        "gtd",
        "2026-12-20T15:00:00.000Z",
        "118.50",
        "117.00",
    )
    terms_row = (
        "terms              sell 4 DE0007164600 stop_limit stop 118.50 limit 117.00 gtd until 2026-12-20T15:00:00.000Z"
    )
    assert terms_row in rendered(order)
    plain = order_fields(failed_order(repo))
    assert (plain["time_in_force"], plain["expires_at"], plain["stop_price"]) == ("day", None, None)
