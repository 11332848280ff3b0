"""SecretsManagerCredential: read on first use, kept for its max age, read again once per refusal, never at import."""

from __future__ import annotations

import threading

import pytest

from chalicelib.adapters.venue_credential import CredentialUnavailable, SecretsManagerCredential
from tests.unit.fakes_aws import FakeSecretsManager

pytestmark = pytest.mark.unit

NAME = "brokerage-test-exchange-credential"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_secret_is_read_once_and_kept_for_its_max_age() -> None:
    secrets, clock = FakeSecretsManager({NAME: "first"}), Clock()
    credential = SecretsManagerCredential(NAME, secrets, max_age_s=300, clock=clock)
    assert secrets.reads == 0  # nothing read before it is needed

    assert [credential.current() for _ in range(5)] == ["first"] * 5
    assert secrets.reads == 1
    secrets.secrets[NAME] = "rotated"
    clock.now += 299
    assert credential.current() == "first"
    clock.now += 1
    assert credential.current() == "rotated"
    assert secrets.reads == 2


def test_a_refused_credential_is_read_again_once_however_many_threads_saw_the_refusal() -> None:
    secrets = FakeSecretsManager({NAME: "old"})
    credential = SecretsManagerCredential(NAME, secrets)
    refused = credential.current()
    secrets.secrets[NAME] = "new"

    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(credential.refreshed(refused))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)

    assert answers == ["new"] * 8
    assert secrets.reads == 2  # the first read, and one after the refusal


@pytest.mark.parametrize(
    ("secrets", "reason"),
    [
        (FakeSecretsManager({}), "ResourceNotFoundException"),
        (FakeSecretsManager({NAME: "   "}), "holds no string"),
    ],
    ids=["missing", "blank"],
)
def test_a_secret_that_cannot_be_read_is_unavailable_naming_it(secrets: FakeSecretsManager, reason: str) -> None:
    with pytest.raises(CredentialUnavailable, match=rf"{NAME}.*{reason}"):
        SecretsManagerCredential(NAME, secrets).current()


def test_an_unreachable_secrets_manager_is_unavailable() -> None:
    secrets = FakeSecretsManager({NAME: "value"})
    secrets.down = True

    with pytest.raises(CredentialUnavailable, match="EndpointConnectionError"):
        SecretsManagerCredential(NAME, secrets).current()


def test_a_failed_read_after_the_max_age_keeps_the_credential_it_has() -> None:
    secrets, clock = FakeSecretsManager({NAME: "working"}), Clock()
    credential = SecretsManagerCredential(NAME, secrets, max_age_s=60, clock=clock)
    credential.current()
    secrets.down = True
    clock.now += 61

    assert credential.current() == "working"
    assert credential.current() == "working"
    assert secrets.reads == 2  # not asked again until another max age is over


def test_a_failed_read_is_the_answer_for_every_thread_queued_behind_it_for_a_few_seconds() -> None:
    # Eight placement threads at a cold start with Secrets Manager down: one read (up to ~8 s with the
    # client's timeouts and retries), not one per thread in turn while the others wait on the lock.
    secrets, clock = FakeSecretsManager({NAME: "value"}), Clock()
    secrets.down = True
    credential = SecretsManagerCredential(NAME, secrets, failed_read_kept_s=5, clock=clock)

    failures: list[str] = []

    def use() -> None:
        try:
            credential.current()
        except CredentialUnavailable as exc:
            failures.append(str(exc))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)

    assert len(failures) == 8
    assert all("EndpointConnectionError" in failure for failure in failures)
    assert secrets.reads == 1


def test_a_failed_read_is_tried_again_once_its_few_seconds_are_over() -> None:
    secrets, clock = FakeSecretsManager({NAME: "value"}), Clock()
    secrets.down = True
    credential = SecretsManagerCredential(NAME, secrets, failed_read_kept_s=5, clock=clock)
    with pytest.raises(CredentialUnavailable):
        credential.current()
    secrets.down = False

    clock.now += 4.9
    with pytest.raises(CredentialUnavailable, match="not asked again yet"):
        credential.current()
    clock.now += 0.1
    assert credential.current() == "value"
    assert secrets.reads == 2


def test_a_failed_read_after_a_refusal_is_the_answer_for_the_other_refused_threads() -> None:
    secrets, clock = FakeSecretsManager({NAME: "old"}), Clock()
    credential = SecretsManagerCredential(NAME, secrets, failed_read_kept_s=5, clock=clock)
    refused = credential.current()
    secrets.down = True

    for _ in range(3):
        with pytest.raises(CredentialUnavailable):
            credential.refreshed(refused)

    assert secrets.reads == 2  # the first read, and one after the refusal
