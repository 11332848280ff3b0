"""What every DynamoDB table adapter shares: PynamoDB table settings and client, condition failures, exact decimals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Generic, TypeVar

from botocore.exceptions import ClientError
from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model


def table_meta(
    table_name: str,
    host: str | None = None,
    connect_timeout_s: float = 1.0,
    read_timeout_s: float = 3.0,
    max_retry_attempts: int = 1,
) -> type:
    """A PynamoDB Meta for one table: PynamoDB keeps table and connection settings on the model class."""
    return type(
        "Meta",
        (),
        {
            "table_name": table_name,
            "host": host,
            "connect_timeout_seconds": connect_timeout_s,
            "read_timeout_seconds": read_timeout_s,
            "max_retry_attempts": max_retry_attempts,
        },
    )


Record = TypeVar("Record", bound=Model)


class DynamoDBTable(Generic[Record]):
    """An adapter of one table, through its PynamoDB model class bound to that table."""

    def __init__(self, record_class: type[Record]) -> None:
        self._records = record_class

    @property
    def client(self) -> Any:
        """The botocore client this table is reached through, created on first use.

        PynamoDB makes its own client per model class and takes none from
        outside, so whoever wants to watch the calls (bench counts them)
        hooks this one.
        """
        model: type[Model] = self._records
        return model._get_connection().connection.client


def text_or_none(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def decimal_or_none(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def is_condition_failure(exc: PynamoDBException) -> bool:
    # Not exc.cause_response_code: it raises AttributeError when the cause is a
    # botocore HTTPClientError such as ConnectionClosedError (connection reset
    # after the request went out), whose response is None.
    cause = exc.cause
    return isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") == (
        "ConditionalCheckFailedException"
    )
