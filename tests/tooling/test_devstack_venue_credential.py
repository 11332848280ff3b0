"""devstack's "ensure the venue credential": created once with a random value, then read as it is (idempotent)."""

from __future__ import annotations

import pytest

from devstack.venue_credential import default_secret_name, ensure_exchange_credential
from tests.unit.fakes_aws import FakeSecretsManager

pytestmark = pytest.mark.unit

NAME = default_secret_name("brokerage-local")


def test_a_missing_secret_is_created_with_a_random_value_and_then_kept() -> None:
    secrets = FakeSecretsManager()

    first = ensure_exchange_credential(secrets, NAME)
    again = ensure_exchange_credential(secrets, NAME)

    assert NAME == "brokerage-local-exchange-credential"
    assert first == again == secrets.secrets[NAME]
    assert len(first) >= 32
    assert ensure_exchange_credential(FakeSecretsManager(), NAME) != first  # random, not a fixed placeholder


def test_an_existing_secret_is_read_as_the_functions_read_it() -> None:
    secrets = FakeSecretsManager({NAME: "  provisioned-by-the-stack\n"})

    assert ensure_exchange_credential(secrets, NAME) == "provisioned-by-the-stack"
    assert secrets.secrets[NAME] == "  provisioned-by-the-stack\n"  # left as it was


def test_a_secret_created_meanwhile_by_someone_else_wins() -> None:
    class CreatedByAnotherStart(FakeSecretsManager):
        def create_secret(self, **request: str) -> dict[str, str]:
            self.secrets[request["Name"]] = "the-other-starts"
            return super().create_secret(**request)  # now answers ResourceExistsException

    assert ensure_exchange_credential(CreatedByAnotherStart(), NAME) == "the-other-starts"
