"""The OpenAPI document's parts shared by its operations: the 3.0 dialect, responses, parameters and security."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from chalicelib.entrypoints.request_models import ORDER_ID_PATTERN
from chalicelib.entrypoints.response_models import ErrorResponse

# 3.0, not 3.1: the Swagger UI we serve (4.x, from swagger-ui-bundle) renders
# only 3.0 documents, and 3.0 is what most client generators read best.
OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.0.0"
CORRELATION_HEADER = "X-Correlation-Id"
SCHEMAS = "#/components/schemas/"

# The value null alone, in OpenAPI 3.0's dialect (which has no null type).
NULL_ONLY = {"type": "object", "nullable": True, "enum": [None]}


def to_openapi_30(schema: Any) -> Any:
    """Pydantic's JSON Schema (2020-12, what OpenAPI 3.1 uses) in OpenAPI 3.0's dialect."""
    if isinstance(schema, list):
        return [to_openapi_30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted: dict[str, Any] = {
        # "properties" maps field names (not keywords) to schemas.
        key: schemas_to_openapi_30(value) if key == "properties" else to_openapi_30(value)
        for key, value in schema.items()
    }
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        # 2020-12: a number; 3.0: a flag on minimum/maximum.
        value = converted.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            converted["minimum" if bound == "exclusiveMinimum" else "maximum"] = value
            converted[bound] = True
    if "const" in converted:
        converted["enum"] = [converted.pop("const")]
    if "examples" in converted:
        examples = converted.pop("examples")
        if examples:
            converted.setdefault("example", examples[0])
    members = converted.get("anyOf")
    if isinstance(members, list) and {"type": "null"} in members:
        # 3.0 has no null type: `X | None` is X with nullable.
        others = [member for member in members if member != {"type": "null"}]
        del converted["anyOf"]
        if len(others) == 1 and "$ref" not in others[0]:
            converted = {**others[0], **converted, "nullable": True}
        else:
            # nullable beside allOf/anyOf admits no null (it only widens a `type` at its own level, and
            # every member must match): null is a member of its own instead.
            converted["anyOf"] = [*others, NULL_ONLY]
    if "$ref" in converted and len(converted) > 1:
        # 3.0 ignores whatever stands beside a $ref: keep it by wrapping the reference.
        converted["allOf"] = [{"$ref": converted.pop("$ref")}]
    return converted


def schemas_to_openapi_30(schemas: dict[str, Any]) -> dict[str, Any]:
    return {name: to_openapi_30(schema) for name, schema in schemas.items()}


def json_content(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": SCHEMAS + model.__name__}}}


def response(description: str, model: type[BaseModel], correlated: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": json_content(model)}
    if correlated:
        response["headers"] = {
            CORRELATION_HEADER: {
                "description": "The correlation id of this request: the caller's, if it was usable, else a new one."
                " A replay (200) carries the one of the request that created the order.",
                "schema": {"type": "string"},
            }
        }
    return response


ORDER_ID_PARAMETER = {
    "name": "order_id",
    "in": "path",
    "required": True,
    "description": "An order id as POST /orders returned it; anything else is 404",
    "schema": {"type": "string", "format": "uuid", "pattern": ORDER_ID_PATTERN},
}
CORRELATION_PARAMETER = {
    "name": CORRELATION_HEADER,
    "in": "header",
    "required": False,
    "description": "Your id for this request, logged with everything it causes and stored with the order."
    " A value not matching the pattern is ignored and a new id is used.",
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"},
}
NOT_FOUND = response("No order of yours has this id (or the id is malformed)", ErrorResponse)
UNAVAILABLE = response("Storage (of orders or of API keys) is unavailable; retry later", ErrorResponse)
UNAUTHORIZED = response("The API key is missing, invalid, revoked or expired", ErrorResponse)
READ_ONLY_KEY = response("The API key is read-only (scope read): only GET requests are allowed", ErrorResponse)
TOO_MANY_REQUESTS = {
    **response(
        "Too many requests: over your account's rate limit (requests per second and burst, set per"
        " account), or on AWS over the stage's or your address's. Wait Retry-After seconds.",
        ErrorResponse,
    ),
    "headers": {
        "Retry-After": {
            "description": "Seconds to wait before the next request",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}
# Either header carries the key; every order route needs one, the documentation none.
SECURITY_SCHEMES = {
    "bearerKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
}
KEY_REQUIRED: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The model's fields as optional query parameters: the same model validates them."""
    schema = model.model_json_schema()
    parameters = []
    for name, field_schema in schema["properties"].items():
        described = {key: value for key, value in field_schema.items() if key not in {"title", "description"}}
        # Optional means absent: a query parameter has no null.
        parameter_schema = to_openapi_30(described)
        parameter_schema.pop("nullable", None)
        if parameter_schema.get("default", 0) is None:
            del parameter_schema["default"]
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": name in schema.get("required", []),
                "description": field_schema.get("description", ""),
                "schema": parameter_schema,
            }
        )
    return parameters


# Besides the orders, the order events and the stream's tokens need a key.
SECURED_PREFIXES = ("/orders", "/events", "/stream/")
# The writes a read-only key may make (chalicelib/entrypoints/auth.py READ_KEY_WRITES).
READ_KEY_WRITES = {("POST", "/stream/tokens")}


def secured(paths: dict[str, Any]) -> dict[str, Any]:
    """Every order operation needs an API key and may answer 401 or 429; a write also 403 (a read-only key)."""
    for path, operations in paths.items():
        if not path.startswith(SECURED_PREFIXES):
            continue
        for method, operation in operations.items():
            operation["security"] = KEY_REQUIRED
            operation["responses"]["401"] = UNAUTHORIZED
            # Throttled after the authorizer, per account (the usage plans; locally the API server).
            operation["responses"]["429"] = TOO_MANY_REQUESTS
            if method.upper() not in ("GET", "HEAD", "OPTIONS") and (method.upper(), path) not in READ_KEY_WRITES:
                operation["responses"]["403"] = READ_ONLY_KEY
            # The key store itself may be down: the authorizer answers 503.
            operation["responses"].setdefault("503", UNAVAILABLE)
    return paths
