"""The DynamoDB API key repository against a real emulator over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest

from chalicelib.adapters.api_keys import ApiKeyAlreadyExists, DynamoDBApiKeyRepository, api_key_record_class_for
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.accounts import issue_key
from chalicelib.service.accounts import authenticate, create_api_key
from devstack.processes import free_port

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def keys(adapter_stack: dict[str, str]) -> DynamoDBApiKeyRepository:
    return DynamoDBApiKeyRepository(api_key_record_class_for(adapter_stack["ApiKeysTableName"]))


def test_a_key_round_trips_and_only_its_hash_is_stored(
    keys: DynamoDBApiKeyRepository, adapter_stack: dict[str, str], aws_endpoint: str
) -> None:
    issued = issue_key("acme", T0, label="integration")
    keys.add(issued.key)
    assert keys.get(issued.key.key_id) == issued.key

    table = boto3.resource("dynamodb", endpoint_url=aws_endpoint).Table(adapter_stack["ApiKeysTableName"])
    item = table.get_item(Key={"key_id": issued.key.key_id}, ConsistentRead=True)["Item"]
    assert set(item) == {"key_id", "account_id", "secret_hash", "created_at", "label"}
    secret = issued.plaintext.split("_", 2)[2]
    assert not any(secret in str(value) for value in item.values())
    assert item["secret_hash"] == issued.key.secret_hash


def test_a_taken_key_id_is_refused_and_the_stored_key_kept(keys: DynamoDBApiKeyRepository) -> None:
    first = issue_key("acme", T0)
    keys.add(first.key)
    impostor = issue_key("mallory", T0)
    with pytest.raises(ApiKeyAlreadyExists):
        keys.add(type(impostor.key)(**{**vars(impostor.key), "key_id": first.key.key_id}))
    assert keys.get(first.key.key_id) == first.key


def test_revoking_keeps_the_first_time_and_an_unknown_key_is_not_created(keys: DynamoDBApiKeyRepository) -> None:
    created = create_api_key("acme", None, keys)
    revoked = keys.revoke(created.key_id, T0)
    assert revoked is not None and revoked.revoked_at == T0 and revoked.account_id == "acme"
    again = keys.revoke(created.key_id, T0 + timedelta(hours=1))
    assert again is not None and again.revoked_at == T0
    stored = keys.get(created.key_id)
    assert stored is not None and stored.revoked_at == T0

    assert keys.revoke("zzzzzzzzzzzz", T0) is None
    assert keys.get("zzzzzzzzzzzz") is None


def test_authenticate_reads_the_key_back_from_the_table(keys: DynamoDBApiKeyRepository) -> None:
    created = create_api_key("acme-2", "laptop", keys)
    assert authenticate(created.plaintext, keys) == "acme-2"


def test_an_unreachable_table_is_storage_unavailable(adapter_stack: dict[str, str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    records = api_key_record_class_for(
        adapter_stack["ApiKeysTableName"], host=dead, max_retry_attempts=0, connect_timeout_s=0.5
    )
    keys = DynamoDBApiKeyRepository(records)
    issued = issue_key("acme", T0)
    with pytest.raises(StorageUnavailable):
        keys.add(issued.key)
    with pytest.raises(StorageUnavailable):
        keys.get(issued.key.key_id)
    with pytest.raises(StorageUnavailable):
        keys.revoke(issued.key.key_id, T0)
