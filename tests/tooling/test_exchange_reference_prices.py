"""The simulator's market data, GET /reference-prices/{instrument}, and our adapter reading it over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from chalicelib.adapters.reference_prices import HttpReferencePrices, ReferencePriceUnavailable
from chalicelib.adapters.venue_credential import StaticCredential
from devstack.exchange_sim.config import CREDENTIAL_ENV
from devstack.exchange_sim.fill_plans import reference_price
from devstack.processes import free_port
from tests.tooling.simulator_support import FAST, Simulator, running_simulator

pytestmark = pytest.mark.integration

APPLE = "US0378331005"
SECRET = "reference-price-test-credential"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with running_simulator(tmp_path_factory.mktemp("exchange-prices"), {**FAST, CREDENTIAL_ENV: ""}) as running:
        yield running


@pytest.fixture(scope="module")
def guarded_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    knobs = {**FAST, CREDENTIAL_ENV: SECRET}
    with running_simulator(tmp_path_factory.mktemp("exchange-prices-auth"), knobs) as running:
        yield running


def test_the_price_is_the_one_fills_stray_around_as_an_exact_string(sim: Simulator) -> None:
    response = sim.get(f"/reference-prices/{APPLE}")
    assert response.status_code == 200
    assert response.json() == {"instrument": APPLE, "price": str(reference_price(APPLE))}
    assert Decimal("10.00") <= Decimal(response.json()["price"]) <= Decimal("500.00")
    # One URL-encoded path segment, decoded.
    assert sim.get("/reference-prices/A%2FB").json()["instrument"] == "A/B"
    assert sim.post(f"/reference-prices/{APPLE}").status_code == 405


def test_our_adapter_reads_it(sim: Simulator) -> None:
    assert HttpReferencePrices(sim.url).price_of(APPLE) == reference_price(APPLE)


def test_with_a_credential_the_simulator_demands_it_and_the_adapter_sends_it(guarded_sim: Simulator) -> None:
    assert guarded_sim.get(f"/reference-prices/{APPLE}").status_code == 401
    with pytest.raises(ReferencePriceUnavailable, match="401"):
        HttpReferencePrices(guarded_sim.url).price_of(APPLE)
    adapter = HttpReferencePrices(guarded_sim.url, credential=StaticCredential(SECRET))
    assert adapter.price_of(APPLE) == reference_price(APPLE)


def test_an_unreachable_venue_is_unavailable_quickly() -> None:
    with pytest.raises(ReferencePriceUnavailable, match="unreachable"):
        HttpReferencePrices(f"http://127.0.0.1:{free_port()}", timeout_s=0.5).price_of(APPLE)
