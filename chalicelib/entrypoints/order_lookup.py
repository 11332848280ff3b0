"""GET /orders/by-client-order-id/{client_order_id}: the caller's order by the key it was created with."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from chalice.app import Request, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from chalicelib.entrypoints.http import NO_ACCOUNT_BODY, account_of, json_response, order_read_response
from chalicelib.entrypoints.request_models import ClientOrderId, FieldError, InvalidOrder, field_error
from chalicelib.entrypoints.response_models import invalid_order_to_json
from chalicelib.service import client_orders
from chalicelib.service.dependencies import Dependencies

NOT_UTF8 = "client_order_id must be percent-encoded UTF-8"


class InvalidPathParameter(InvalidOrder):
    """A path parameter that cannot name anything (422), named with what is wrong."""

    subject = "path parameter"


class ClientOrderIdPath(BaseModel):
    """The path parameter, held to the rules of POST /orders' client_order_id."""

    model_config = ConfigDict(strict=True, frozen=True)

    client_order_id: ClientOrderId


def parse_client_order_id(raw: str) -> str:
    """The path segment percent-decoded (once), valid as a client_order_id; InvalidPathParameter otherwise.

    API Gateway's REST API and chalice local pass path parameters as the
    client sent them, percent-encoded; a key with "/", "%", "?", "#" or a
    space only reaches this route encoded.
    """
    try:
        decoded = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPathParameter([FieldError("client_order_id", NOT_UTF8)]) from None
    try:
        ClientOrderIdPath.model_validate({"client_order_id": decoded})
    except ValidationError as exc:
        raise InvalidPathParameter([field_error(error) for error in exc.errors()]) from None
    return decoded


def get_order_by_client_order_id(request: Request, raw_client_order_id: str, dependencies: Dependencies) -> Response:
    """200 with the order; 404 if no order of the caller has this key (another account's neither); 422 if invalid."""
    account_id = account_of(request)
    if account_id is None:
        return json_response(401, NO_ACCOUNT_BODY)
    try:
        client_order_id = parse_client_order_id(raw_client_order_id)
    except InvalidOrder as exc:
        return json_response(422, invalid_order_to_json(exc))
    return order_read_response(
        lambda: client_orders.get_order_by_client_order_id(client_order_id, account_id, dependencies),
        "order not read by its client_order_id",
        account_id=account_id,
    )
