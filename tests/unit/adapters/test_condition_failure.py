"""Telling a failed condition from an unreachable DynamoDB, whatever botocore raised."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError
from pynamodb.exceptions import PutError

from chalicelib.adapters.dynamodb import is_condition_failure

pytestmark = pytest.mark.unit


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "PutItem")


def test_only_a_conditional_check_failure_is_one() -> None:
    assert is_condition_failure(PutError("m", client_error("ConditionalCheckFailedException")))
    assert not is_condition_failure(PutError("m", client_error("ProvisionedThroughputExceededException")))


def test_connection_errors_are_not_condition_failures_and_do_not_raise() -> None:
    # ConnectionClosedError (a reset after the request went out) has response None.
    assert not is_condition_failure(PutError("m", ConnectionClosedError(endpoint_url="http://127.0.0.1:1/")))
    assert not is_condition_failure(PutError("m", EndpointConnectionError(endpoint_url="http://127.0.0.1:1/")))
