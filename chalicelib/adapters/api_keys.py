"""API keys in DynamoDB through PynamoDB, one item per key id; records are mapped to domain keys here only."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from pynamodb.attributes import UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

from chalicelib.adapters.dynamodb import DynamoDBTable, is_condition_failure, table_meta
from chalicelib.adapters.repository import StorageUnavailable
from chalicelib.domain.accounts import ApiKey


class ApiKeyAlreadyExists(Exception):
    """A key with this key id is stored already."""


class ApiKeyRepository(Protocol):
    def add(self, key: ApiKey) -> None:
        """Store a new key; raises ApiKeyAlreadyExists if its key id is taken."""

    def get(self, key_id: str) -> ApiKey | None:
        """The key as last written (strongly consistent, so a revocation counts at once), or None."""

    def revoke(self, key_id: str, at: datetime) -> ApiKey | None:
        """Mark the key revoked (a revoked key keeps its first revocation time); None if there is no such key."""


class ApiKeyRecord(Model):
    class Meta:
        table_name = "api-keys"  # replaced per table by api_key_record_class_for()

    key_id = UnicodeAttribute(hash_key=True)
    account_id = UnicodeAttribute()
    secret_hash = UnicodeAttribute()  # SHA-256 of the whole key; the key itself is never stored
    created_at = UTCDateTimeAttribute()
    revoked_at = UTCDateTimeAttribute(null=True)
    label = UnicodeAttribute(null=True)


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
