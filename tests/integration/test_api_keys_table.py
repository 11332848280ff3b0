"""The DynamoDB API key repository against a real emulator over HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from chalicelib.adapters.api_keys import ApiKeyAlreadyExists, DynamoDBApiKeyRepository, api_key_record_class_for
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.accounts import KeyScope, issue_key
from chalicelib.service.accounts import authenticate, authenticate_key, create_api_key, list_api_keys
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
    assert set(item) == {"key_id", "account_id", "secret_hash", "created_at", "label", "scope"}
    assert item["scope"] == "trade"
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
    with pytest.raises(StorageUnavailable):
        keys.record_use(issued.key.key_id, T0)
    with pytest.raises(StorageUnavailable):
        keys.list_for_account("acme")


def test_scope_and_expiry_round_trip(keys: DynamoDBApiKeyRepository) -> None:
    issued = issue_key("acme", T0, scope=KeyScope.READ, expires_in=timedelta(days=30))
    keys.add(issued.key)
    stored = keys.get(issued.key.key_id)
    assert stored == issued.key
    assert stored is not None and (stored.scope, stored.expires_at) == (KeyScope.READ, T0 + timedelta(days=30))


def test_a_key_stored_before_scopes_is_a_trade_key(
    keys: DynamoDBApiKeyRepository, adapter_stack: dict[str, str], aws_endpoint: str
) -> None:
    issued = issue_key("acme", T0)
    table = boto3.resource("dynamodb", endpoint_url=aws_endpoint).Table(adapter_stack["ApiKeysTableName"])
    # As the code before scopes wrote it: no scope, expires_at or last_used_at attribute.
    table.put_item(
        Item={
            "key_id": issued.key.key_id,
            "account_id": "acme",
            "secret_hash": issued.key.secret_hash,
            "created_at": T0.strftime("%Y-%m-%dT%H:%M:%S.%f+0000"),
        }
    )
    stored = keys.get(issued.key.key_id)
    assert stored is not None and stored.scope is KeyScope.TRADE and stored.expires_at is None
    assert authenticate_key(issued.plaintext, keys).scope is KeyScope.TRADE


def test_a_use_is_written_at_most_once_a_minute_and_never_creates_a_key(
    keys: DynamoDBApiKeyRepository, adapter_stack: dict[str, str], aws_endpoint: str
) -> None:
    issued = issue_key("acme", T0)
    keys.add(issued.key)
    table = boto3.resource("dynamodb", endpoint_url=aws_endpoint).Table(adapter_stack["ApiKeysTableName"])

    def item() -> dict[str, object]:
        return dict(table.get_item(Key={"key_id": issued.key.key_id}, ConsistentRead=True)["Item"])

    before = item()
    assert keys.record_use(issued.key.key_id, T0) is True
    # Within the minute the condition fails: no write, and that is no error.
    assert keys.record_use(issued.key.key_id, T0 + timedelta(seconds=59, microseconds=999999)) is False
    assert keys.record_use(issued.key.key_id, T0 - timedelta(hours=1)) is False  # a slow clock does not go back
    stored = keys.get(issued.key.key_id)
    assert stored is not None and stored.last_used_at == T0
    # Only last_used_at changed.
    assert {k: v for k, v in item().items() if k != "last_used_at"} == before
    assert keys.record_use(issued.key.key_id, T0 + timedelta(minutes=1)) is True
    stored = keys.get(issued.key.key_id)
    assert stored is not None and stored.last_used_at == T0 + timedelta(minutes=1)

    assert keys.record_use("zzzzzzzzzzzz", T0) is False
    assert keys.get("zzzzzzzzzzzz") is None


def test_many_uses_at_once_write_once(keys: DynamoDBApiKeyRepository) -> None:
    from concurrent.futures import ThreadPoolExecutor

    issued = issue_key("acme", T0)
    keys.add(issued.key)
    moments = [T0 + timedelta(milliseconds=n) for n in range(20)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        written = list(pool.map(lambda at: keys.record_use(issued.key.key_id, at), moments))
    assert written.count(True) == 1


def test_an_accounts_keys_are_listed_through_the_index_oldest_first(keys: DynamoDBApiKeyRepository) -> None:
    account = f"list-{uuid.uuid4().hex[:8]}"
    newer = create_api_key(account, "newer", keys, clock=lambda: T0 + timedelta(hours=1), scope=KeyScope.READ)
    older = create_api_key(account, "older", keys, clock=lambda: T0, expires_in=timedelta(days=1))
    create_api_key(f"{account}-other", None, keys, clock=lambda: T0)
    keys.revoke(older.key_id, T0 + timedelta(minutes=5))
    keys.record_use(newer.key_id, T0 + timedelta(hours=2))

    listed = list_api_keys(account, keys)  # the index is eventually consistent; moto's at once
    assert [(key.key_id, key.label, key.scope) for key in listed] == [
        (older.key_id, "older", KeyScope.TRADE),
        (newer.key_id, "newer", KeyScope.READ),
    ]
    assert listed[0].revoked_at == T0 + timedelta(minutes=5) and listed[0].expires_at == T0 + timedelta(days=1)
    assert listed[1].last_used_at == T0 + timedelta(hours=2)
    assert list_api_keys(f"{account}-none", keys) == []
