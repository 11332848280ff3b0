"""The venue credential on an emulator: make sure its secret exists, and read it for the exchange simulator.

The stack's template declares the secret (ExchangeCredentialSecret in
infra/resources.yaml, a generated value), but moto's CloudFormation skips
AWS::SecretsManager::Secret; devstack.provision then creates it. Whatever
made it, the local stack reads its value here and starts the simulator
demanding it, so order entry and the feed are authenticated end to end
exactly as the functions and the bridge find the secret.
"""

from __future__ import annotations

import secrets
from typing import Any

from botocore.exceptions import ClientError

SECRET_NAME_VARIABLE = "EXCHANGE_CREDENTIAL_SECRET_NAME"  # noqa: S105 (a variable's name, not a secret)


def default_secret_name(prefix: str) -> str:
    """The secret's name for a ResourcePrefix, as infra/resources.yaml names it."""
    return f"{prefix}-exchange-credential"


def ensure_exchange_credential(secretsmanager: Any, secret_name: str) -> str:
    """The secret's value; created first with a random value if there is none (idempotent, race-safe)."""
    value = _value_or_none(secretsmanager, secret_name)
    if value is None:
        try:
            secretsmanager.create_secret(Name=secret_name, SecretString=secrets.token_urlsafe(36))
        except ClientError as exc:
            # Another start (or provisioning) created it meanwhile: then that one's value holds.
            if _code(exc) != "ResourceExistsException":
                raise
        value = _value_or_none(secretsmanager, secret_name)
    if not value:
        raise RuntimeError(f"secret {secret_name} holds no credential")
    return value


def _value_or_none(secretsmanager: Any, secret_name: str) -> str | None:
    try:
        answer = secretsmanager.get_secret_value(SecretId=secret_name)
    except ClientError as exc:
        if _code(exc) == "ResourceNotFoundException":
            return None
        raise
    value = answer.get("SecretString")
    # As the functions and the bridge read it (surrounding whitespace is no part of a credential).
    return value.strip() if isinstance(value, str) else ""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
