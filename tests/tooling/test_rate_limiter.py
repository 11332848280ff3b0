"""The local API server's per-account throttling (devstack/rate_limiter.py): buckets shared by forked workers and
threads, slots reused without changing what an account sees, limits read through a cache, and the gateway's 429."""

from __future__ import annotations

import json
import multiprocessing
import threading
from typing import Any

import pytest
from chalice.app import AuthRequest, Chalice
from chalice.config import Config

from chalicelib.domain.rate_limits import DEFAULT_RATE_LIMIT, RateLimit
from chalicelib.entrypoints import auth
from devstack.api_gateway import GatewayWsgiApp, load_gateway_responses, local_gateway
from devstack.rate_limiter import AccountThrottle, CachedLimits, SharedBuckets
from tests.unit.fakes import FakeAccountRateLimits

pytestmark = pytest.mark.unit


class StillClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FixedLimits:
    def __init__(self, limits: dict[str, RateLimit]) -> None:
        self.limits = limits

    def limit_of(self, account_id: str) -> RateLimit:
        return self.limits.get(account_id, DEFAULT_RATE_LIMIT)


def admitted(buckets: SharedBuckets, account: str, limit: RateLimit, tries: int) -> int:
    return sum(buckets.admit(account, limit).admitted for _ in range(tries))


def test_each_account_has_its_own_bucket() -> None:
    buckets, limit = SharedBuckets(clock=StillClock()), RateLimit(rate=1, burst=3)
    assert admitted(buckets, "acme", limit, 10) == 3
    assert admitted(buckets, "bolt", limit, 10) == 3
    refused = buckets.admit("acme", limit)
    assert (refused.admitted, refused.retry_after_s) == (False, 1)


def _take_all(buckets: SharedBuckets, limit: RateLimit, out: Any) -> None:
    out.put(admitted(buckets, "acme", limit, 10))


def test_a_forked_worker_and_its_parent_share_one_bucket() -> None:
    # As gunicorn's workers, forked after the app (and so the buckets) was made.
    clock = StillClock()
    buckets, limit = SharedBuckets(clock=clock), RateLimit(rate=1, burst=4)
    fork = multiprocessing.get_context("fork")
    results = fork.Queue()
    child = fork.Process(target=_take_all, args=(buckets, limit, results))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert results.get(timeout=5) == 4
    assert admitted(buckets, "acme", limit, 10) == 0
    assert admitted(buckets, "bolt", limit, 10) == 4


def test_threads_at_once_take_exactly_the_burst() -> None:
    buckets, limit = SharedBuckets(clock=StillClock()), RateLimit(rate=1, burst=25)
    start = threading.Barrier(8)
    counts: list[int] = []

    def one() -> None:
        start.wait()
        counts.append(admitted(buckets, "acme", limit, 10))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 25


def test_a_full_buckets_slot_is_reused_and_a_busy_one_forgotten_only_when_every_slot_is_busy() -> None:
    clock = StillClock()
    buckets, limit = SharedBuckets(slots=2, probes=2, clock=clock), RateLimit(rate=1, burst=2)
    assert admitted(buckets, "a", limit, 5) == 2
    assert admitted(buckets, "b", limit, 5) == 2
    # Both slots busy: "c" takes one (the nearest full), so one of "a" and "b" is forgotten (a full
    # bucket again), the other still refused: only with more busy accounts than slots.
    assert admitted(buckets, "c", limit, 5) == 2
    forgotten = [account for account in ("a", "b") if buckets.admit(account, limit).admitted]
    assert len(forgotten) == 1
    # Long after, every bucket is full again: whichever slot an account lands in, it gets its whole burst.
    clock.now += 100
    for account in ("a", "b", "c", "d"):
        assert admitted(buckets, account, limit, 5) == 2, account
        clock.now += 100


def test_the_throttle_answers_the_wait_in_whole_seconds() -> None:
    throttle = AccountThrottle(FixedLimits({"slow": RateLimit(1, 2)}), SharedBuckets(clock=StillClock()))
    assert [throttle.retry_after("slow") for _ in range(3)] == [None, None, 1]
    assert throttle.retry_after("other") is None


def test_limits_are_read_once_a_minute_and_an_unreadable_table_means_the_default_for_that_request_only() -> None:
    store, clock = FakeAccountRateLimits(), StillClock()
    store.set_limit("acme", RateLimit(3, 4))
    store.set_limit("demo", RateLimit(2000, 4000))
    limits = CachedLimits(lambda: store, clock=clock)
    assert limits.limit_of("acme") == RateLimit(3, 4)
    store.set_limit("acme", RateLimit(5, 6))
    clock.now += 59
    assert limits.limit_of("acme") == RateLimit(3, 4)  # within the minute: as read
    assert store.reads == 1
    clock.now += 1
    assert limits.limit_of("acme") == RateLimit(5, 6)  # a minute on: read again
    assert store.reads == 2
    store.down = True
    # Never read and unreadable: the default, asked again each time rather than kept.
    assert limits.limit_of("demo") == DEFAULT_RATE_LIMIT
    assert limits.limit_of("demo") == DEFAULT_RATE_LIMIT
    # Read before: its last limit, however old.
    clock.now += 600
    assert limits.limit_of("acme") == RateLimit(5, 6)
    # The table back: the demo account's own limit at once, no default kept from the blip.
    store.down = False
    assert limits.limit_of("demo") == RateLimit(2000, 4000)


# --- The gateway step ------------------------------------------------------------------


def _app() -> Chalice:
    app = Chalice(app_name="throttled")

    @auth.accepting_request_events(app)
    @app.authorizer(ttl_seconds=0)
    def allow_by_header(auth_request: AuthRequest) -> dict[str, Any]:
        # Allows everyone, as the account the Authorization header names.
        account = auth_request.token or "nobody"
        return {
            "principalId": account,
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": ["*"]}],
            },
            "context": {"account_id": account},
        }

    @app.route("/thing", methods=["GET"], authorizer=allow_by_header)
    def thing() -> dict[str, str]:
        return {"ok": "yes"}

    @app.route("/open", methods=["GET"])
    def open_route() -> dict[str, str]:
        return {"ok": "yes"}

    return app


def call(wsgi: GatewayWsgiApp, path: str, account: str | None) -> tuple[str, dict[str, str], Any]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.input": None}
    if account:
        environ["HTTP_AUTHORIZATION"] = account
    body = b"".join(wsgi(environ, start_response))
    return seen["status"], seen["headers"], json.loads(body)


def test_an_account_over_its_limit_gets_the_deployed_throttled_response_and_others_go_on() -> None:
    app = _app()
    throttle = AccountThrottle(FixedLimits({"slow": RateLimit(1, 2)}), SharedBuckets(clock=StillClock()))
    responses = load_gateway_responses()
    wsgi = GatewayWsgiApp(local_gateway(app, Config.create(chalice_app=app), responses, throttle))
    assert [call(wsgi, "/thing", "slow")[0] for _ in range(2)] == ["200 OK", "200 OK"]
    status, headers, body = call(wsgi, "/thing", "slow")
    assert status == "429 Too Many Requests"
    assert headers["Retry-After"] == "1"
    assert headers["x-amzn-ErrorType"] == "TooManyRequestsException"
    assert body == json.loads(responses["THROTTLED"].template)
    assert body["message"].startswith("Too many requests: ")
    assert call(wsgi, "/thing", "fast")[0] == "200 OK"
    # Routes without the authorizer take no token (on AWS: no API key required there).
    assert all(call(wsgi, "/open", None)[0] == "200 OK" for _ in range(5))
