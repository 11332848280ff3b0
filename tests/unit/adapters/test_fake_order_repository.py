"""The in-memory order repository the service tests use keeps the same contract as the DynamoDB adapter."""

from __future__ import annotations

import pytest

from tests.contracts.order_repository import OrderListingContract, OrderRepositoryContract
from tests.unit.fakes import FakeRepository

pytestmark = pytest.mark.unit


class TestFakeOrderRepository(OrderRepositoryContract):
    @pytest.fixture
    def repo(self) -> FakeRepository:
        return FakeRepository()


class TestFakeOrderListing(OrderListingContract):
    @pytest.fixture(scope="class")
    @classmethod
    def repo(cls) -> FakeRepository:
        return FakeRepository()
