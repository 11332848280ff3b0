"""The OpenAPI document and docs page over real HTTP, and hostile request bodies that must store nothing."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import pytest
import requests
from openapi_spec_validator import validate as validate_spec

from chalicelib.domain.model import order_id_for_client_key
from chalicelib.entrypoints.json_body import MAX_BODY_BYTES, MAX_JSON_DEPTH
from chalicelib.entrypoints.openapi import openapi_document
from devstack.stack import DEMO_ACCOUNT, LocalStack
from tests.e2e.helpers import auth

# moto_only: the OpenAPI document, docs page and hostile bodies are the API's; the emulator is only storage.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]

ISIN = "US0378331005"


def test_the_openapi_document_is_served_and_valid(stack: LocalStack) -> None:
    response = requests.get(f"{stack.api_url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    document = response.json()
    validate_spec(document)
    assert document["servers"] == [{"url": "/"}]
    assert {key: value for key, value in document.items() if key != "servers"} == openapi_document()


def test_the_docs_page_loads_only_assets_it_serves_itself(stack: LocalStack) -> None:
    page_url = f"{stack.api_url}/docs"
    page = requests.get(page_url, timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    references = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert len(references) >= 3
    expected_types = {".js": "text/javascript", ".css": "text/css"}
    for reference in references:
        if reference.startswith("data:"):
            continue
        url = urljoin(page_url, reference)
        # Same origin, so it works offline and behind the page's Content-Security-Policy.
        assert urlsplit(url).netloc == urlsplit(stack.api_url).netloc, reference
        asset = requests.get(url, timeout=10)
        assert asset.status_code == 200, reference
        suffix = reference[reference.rindex(".") :]
        assert asset.headers["Content-Type"].startswith(expected_types[suffix]), reference
        assert asset.text
    bundle = requests.get(f"{stack.api_url}/docs/swagger-ui-bundle.js", timeout=10).text
    assert "SwaggerUIBundle" in bundle
    initializer = requests.get(f"{stack.api_url}/docs/swagger-initializer.js", timeout=10).text
    assert '"openapi.json"' in initializer
    assert "http" not in initializer  # no CDN, no external validator


@pytest.mark.parametrize("name", ["index.html", "swagger-ui.js.map", "..%2F__init__.py", "oauth2-redirect.html"])
def test_files_outside_the_allow_list_are_404(stack: LocalStack, name: str) -> None:
    response = requests.get(f"{stack.api_url}/docs/{name}", timeout=10)
    assert response.status_code == 404
    assert response.json() == {"message": "No such file"}


def order_text(key: str, **changes: Any) -> str:
    body: dict[str, Any] = {
        "type": "limit",
        "side": "buy",
        "instrument": ISIN,
        "quantity": 10,
        "limit_price": 187.25,
        "client_order_id": key,
    }
    body.update(changes)
    return json.dumps(body)


def with_key_suffix(suffix: str) -> Any:
    return lambda key: order_text(key + suffix).encode()


# name, body from a fresh client_order_id, status, part of the message, what the body appends to that key.
# No case may create an order under the key or under the key as the body spells it.
HOSTILE_BODIES: list[tuple[str, Any, int, str, str]] = [
    ("too large", lambda k: order_text(k).encode() + b" " * MAX_BODY_BYTES, 413, "larger than", ""),
    (
        "deeply nested",
        lambda k: order_text(k).encode()[:-1] + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        400,
        f"deeper than {MAX_JSON_DEPTH}",
        "",
    ),
    ("duplicate key", lambda k: order_text(k).encode()[:-1] + b', "quantity": 1}', 400, 'key "quantity"', ""),
    ("NaN", lambda k: order_text(k).replace("187.25", "NaN").encode(), 400, "NaN", ""),
    ("Infinity", lambda k: order_text(k).replace("187.25", "Infinity").encode(), 400, "Infinity", ""),
    (
        "5000-digit integer",
        lambda k: order_text(k).replace(": 10,", ": 1" + "0" * 5000 + ",").encode(),
        422,
        "quantity must be written in at most 32 characters",
        "",
    ),
    (
        "price of 16,000 zeros",
        lambda k: order_text(k).replace("187.25", "100." + "0" * 16_000).encode(),
        422,
        "limit_price must be written in at most 32 characters",
        "",
    ),
    ("31-digit integer", lambda k: order_text(k, quantity=10**30).encode(), 422, "quantity must be at most", ""),
    ("number as a string", lambda k: order_text(k, quantity="10").encode(), 422, "quantity must be an integer", ""),
    ("wrong type", lambda k: order_text(k, limit_price=True).encode(), 422, "limit_price must be a JSON number", ""),
    ("unknown field", lambda k: order_text(k, venue="XNAS").encode(), 422, "venue is not a known field", ""),
    ("not an object", lambda k: f"[{order_text(k)}]".encode(), 400, "JSON object", ""),
    ("non-UTF-8 bytes", lambda k: order_text(k).encode().replace(b'"buy"', b'"b\xffy"'), 400, "not UTF-8", ""),
    ("UTF-16", lambda k: order_text(k).encode("utf-16"), 400, "not UTF-8", ""),
    ("byte order mark", lambda k: b"\xef\xbb\xbf" + order_text(k).encode(), 400, "BOM", ""),
    ("unpaired surrogate", lambda k: order_text(k, side="\ud800").encode(), 400, "unpaired surrogate", ""),
    ("NUL in the key", with_key_suffix("\u0000"), 422, "U+0000", "\u0000"),
    ("right-to-left override in the key", with_key_suffix("\u202e"), 422, "U+202E", "\u202e"),
    ("zero-width space in the key", with_key_suffix("\u200b"), 422, "U+200B", "\u200b"),
    ("no-break space in the key", with_key_suffix("\u00a0x"), 422, "U+00A0", "\u00a0x"),
    ("decomposed accent in the key", with_key_suffix("e\u0301"), 422, "normalization form C", "e\u0301"),
]


@pytest.mark.parametrize(
    ("make_body", "status", "fragment", "key_suffix"),
    [pytest.param(make, status, fragment, suffix, id=name) for name, make, status, fragment, suffix in HOSTILE_BODIES],
)
def test_a_hostile_body_gets_a_clear_4xx_and_stores_nothing(
    stack: LocalStack, make_body: Any, status: int, fragment: str, key_suffix: str
) -> None:
    key = f"hostile-{uuid.uuid4().hex[:12]}"
    headers = {"Content-Type": "application/json", **auth(stack.api_key)}
    response = requests.post(f"{stack.api_url}/orders", data=make_body(key), headers=headers, timeout=30)
    assert response.status_code == status, response.text
    answer = response.json()
    assert fragment in answer["message"], answer
    assert response.headers.get("X-Correlation-Id")
    if status == 422:
        assert answer["errors"], answer
    for stored_key in (key, key + key_suffix):
        order_id = order_id_for_client_key(DEMO_ACCOUNT, stored_key)
        response = requests.get(f"{stack.api_url}/orders/{order_id}", headers=auth(stack.api_key), timeout=10)
        assert response.status_code == 404


def test_a_wrong_content_type_is_415_and_stores_nothing(stack: LocalStack) -> None:
    key = f"hostile-{uuid.uuid4().hex[:12]}"
    headers = {"Content-Type": "text/plain", **auth(stack.api_key)}
    response = requests.post(f"{stack.api_url}/orders", data=order_text(key), headers=headers, timeout=10)
    assert response.status_code == 415
    assert response.json() == {
        "message": "Content-Type must be application/json, not 'text/plain': send the body as JSON with the header"
        " 'Content-Type: application/json' (curl -d sends application/x-www-form-urlencoded unless told)"
    }
    order_id = order_id_for_client_key(DEMO_ACCOUNT, key)
    assert (
        requests.get(f"{stack.api_url}/orders/{order_id}", headers=auth(stack.api_key), timeout=10).status_code == 404
    )


def test_ids_that_are_not_canonical_order_ids_are_404(stack: LocalStack) -> None:
    created = requests.post(
        f"{stack.api_url}/orders",
        data=order_text(f"ids-{uuid.uuid4()}"),
        headers={"Content-Type": "application/json", **auth(stack.api_key)},
        timeout=30,
    ).json()
    order_id = created["id"]
    headers = auth(stack.api_key)
    assert requests.get(f"{stack.api_url}/orders/{order_id}", headers=headers, timeout=10).status_code == 200
    for other in (
        order_id.upper(),
        order_id.replace("-", ""),
        f"{{{order_id}}}",
        f"urn:uuid:{order_id}",
        order_id + " ",
    ):
        for suffix in ("", "/executions"):
            url = f"{stack.api_url}/orders/{quote(other, safe='')}{suffix}"
            response = requests.get(url, headers=headers, timeout=10)
            assert response.status_code == 404, (other, suffix, response.text)
            assert response.json() == {"message": "Order not found"}
