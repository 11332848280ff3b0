"""The simulator's test-only POST /admin/feed/raw: JSON objects put on the real execution feed as they are."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.tooling.simulator_support import FAST, HTTP_TIMEOUT_S, Simulator, feed, next_seq, running_simulator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with running_simulator(tmp_path_factory.mktemp("exchange-raw-feed"), FAST) as running:
        yield running


def test_raw_messages_go_on_the_feed_with_their_numbers_text_and_the_next_seqs(sim: Simulator) -> None:
    start = next_seq(sim)
    body = b'[{"exec_id": "raw-1", "avg_price": 1e400, "cum_qty": 3}, {"exec_id": "raw-2", "last_price": "100.50"}]'
    response = sim.post("/admin/feed/raw", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json() == {"seqs": [start, start + 1]}
    with feed(sim, from_seq=start) as connection:
        texts = [connection.recv(timeout=HTTP_TIMEOUT_S) for _ in range(2)]
    # The number as sent: json would have read it as inf and written Infinity, which is not JSON.
    assert texts[0] == f'{{"seq": {start}, "exec_id": "raw-1", "avg_price": 1E+400, "cum_qty": 3}}'
    assert json.loads(texts[1]) == {"seq": start + 1, "exec_id": "raw-2", "last_price": "100.50"}
    assert next_seq(sim) == start + 2


def test_a_message_with_a_seq_of_its_own_keeps_it(sim: Simulator) -> None:
    start = next_seq(sim)
    response = sim.post("/admin/feed/raw", {"seq": "not a number", "exec_id": "raw-3"})
    assert response.json() == {"seqs": [start]}
    with feed(sim, from_seq=start) as connection:
        assert json.loads(connection.recv(timeout=HTTP_TIMEOUT_S)) == {"seq": "not a number", "exec_id": "raw-3"}


@pytest.mark.parametrize("body", [b"not json", b"[]", b"[1, 2]", b'"text"'])
def test_anything_but_objects_is_a_400(sim: Simulator, body: bytes) -> None:
    start = next_seq(sim)
    response = sim.post("/admin/feed/raw", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "JSON object" in response.json()["error"]
    assert next_seq(sim) == start
