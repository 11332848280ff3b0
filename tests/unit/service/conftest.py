"""The in-memory store and queue most service tests start from (fixtures, fresh for every test)."""

from __future__ import annotations

import pytest

from tests.unit.fakes import FakeQueue, FakeRepository


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository()


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue()
