"""API keys in DynamoDB through PynamoDB, one item per key id; records are mapped to domain keys here only."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from pynamodb.attributes import UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.exceptions import PynamoDBException
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.adapters.dynamodb import DynamoDBTable, is_condition_failure, table_meta
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.accounts import LAST_USE_RESOLUTION, ApiKey, stored_scope

ACCOUNT_KEYS_INDEX_NAME = "account-keys"


class ApiKeyAlreadyExists(Exception):
    """A key with this key id is stored already."""


class ApiKeyRepository(Protocol):
    def add(self, key: ApiKey) -> None:
        """Store a new key; raises ApiKeyAlreadyExists if its key id is taken."""

    def get(self, key_id: str) -> ApiKey | None:
        """The key as last written (strongly consistent, so a revocation counts at once), or None."""

    def revoke(self, key_id: str, at: datetime) -> ApiKey | None:
        """Mark the key revoked (a revoked key keeps its first revocation time); None if there is no such key."""

    def record_use(self, key_id: str, now: datetime) -> bool:
        """Set last_used_at to `now` unless it was set less than LAST_USE_RESOLUTION before; True if written.

        Conditional, so that any number of requests and functions at once
        write it at most once per LAST_USE_RESOLUTION; an unknown key id is
        not created. Raises StorageUnavailable.
        """

    def list_for_account(self, account_id: str) -> list[ApiKey]:
        """Every key of the account, revoked and expired ones included, oldest first (eventually consistent)."""


class AccountKeysIndex(GlobalSecondaryIndex["ApiKeyRecord"]):  # type: ignore[no-untyped-call]
    """Every key by account and creation time: `python -m ops keys list --account A`."""

    class Meta:
        index_name = ACCOUNT_KEYS_INDEX_NAME
        projection = AllProjection()

    account_id = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class ApiKeyRecord(Model):
    class Meta:
        table_name = "api-keys"  # replaced per table by api_key_record_class_for()

    key_id = UnicodeAttribute(hash_key=True)
    account_id = UnicodeAttribute()
    secret_hash = UnicodeAttribute()  # SHA-256 of the whole key; the key itself is never stored
    created_at = UTCDateTimeAttribute()
    revoked_at = UTCDateTimeAttribute(null=True)
    label = UnicodeAttribute(null=True)
    # Absent on keys stored before scopes existed: those are trade keys (see stored_scope).
    scope = UnicodeAttribute(null=True)
    expires_at = UTCDateTimeAttribute(null=True)
    last_used_at = UTCDateTimeAttribute(null=True)

    account_keys = AccountKeysIndex()


def api_key_record_class_for(table_name: str, **connection: Any) -> type[ApiKeyRecord]:
    """An ApiKeyRecord bound to one table (connection: see table_meta)."""
    return type("BoundApiKeyRecord", (ApiKeyRecord,), {"Meta": table_meta(table_name, **connection)})


def _to_key(record: ApiKeyRecord) -> ApiKey:
    return ApiKey(
        key_id=record.key_id,
        account_id=record.account_id,
        secret_hash=record.secret_hash,
        created_at=record.created_at,
        label=record.label,
        revoked_at=record.revoked_at,
        scope=stored_scope(record.scope),
        expires_at=record.expires_at,
        last_used_at=record.last_used_at,
    )


class DynamoDBApiKeyRepository(DynamoDBTable[ApiKeyRecord]):
    """ApiKeyRepository on one DynamoDB table; see infra/resources.yaml (ApiKeysTable)."""

    def add(self, key: ApiKey) -> None:
        record = self._records(
            key.key_id,
            account_id=key.account_id,
            secret_hash=key.secret_hash,
            created_at=key.created_at,
            revoked_at=key.revoked_at,
            label=key.label,
            scope=key.scope.value,
            expires_at=key.expires_at,
            last_used_at=key.last_used_at,
        )
        try:
            record.save(condition=self._records.key_id.does_not_exist())
        except PynamoDBException as exc:
            if is_condition_failure(exc):
                raise ApiKeyAlreadyExists(key.key_id) from exc
            raise StorageUnavailable(f"could not store API key {key.key_id}") from exc

    def get(self, key_id: str) -> ApiKey | None:
        try:
            record = self._records.get(key_id, consistent_read=True)
        except self._records.DoesNotExist:
            return None
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not read API key {key_id}") from exc
        return _to_key(record)

    def revoke(self, key_id: str, at: datetime) -> ApiKey | None:
        record = self._records(key_id)
        # One conditional UpdateItem: `revoked_at | at` is if_not_exists(), so
        # revoking again keeps the first time; the condition keeps an unknown
        # key id from creating an item.
        try:
            record.update(
                actions=[self._records.revoked_at.set(self._records.revoked_at | at)],
                condition=self._records.key_id.exists(),
            )
        except PynamoDBException as exc:
            if is_condition_failure(exc):
                return None
            raise StorageUnavailable(f"could not revoke API key {key_id}") from exc
        return _to_key(record)

    def record_use(self, key_id: str, now: datetime) -> bool:
        records = self._records
        record = records(key_id)
        # The authorizer's only write, and it touches last_used_at alone (its
        # IAM grant allows no other attribute). The timestamps are one fixed
        # UTC format, so comparing the strings compares the times.
        stale = records.last_used_at.does_not_exist() | (records.last_used_at <= now - LAST_USE_RESOLUTION)
        try:
            record.update(
                actions=[records.last_used_at.set(now)],
                condition=records.key_id.exists() & stale,
            )
        except PynamoDBException as exc:
            if is_condition_failure(exc):
                return False  # recorded less than a minute ago (by this or another function), or no such key
            raise StorageUnavailable(f"could not record the use of API key {key_id}") from exc
        return True

    def list_for_account(self, account_id: str) -> list[ApiKey]:
        index: Any = self._records.account_keys
        try:
            return [_to_key(record) for record in index.query(account_id)]
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not list the API keys of account {account_id}") from exc
