"""The typed client generated from our OpenAPI document (openapi-python-client) works against the running API.

Clients generate one from GET /openapi.json: the document must generate without a warning, and every answer
the API gives must parse into the generated models (a status or field the document does not name would fail
here). Each test drives the real local API with the generated client: create, read, list, replace, look up by
client order id, cancel, and a 422 parsed into its model.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from devstack.stack import LocalStack
from devstack.stream_client import Account, new_account
from tests.e2e.helpers import Exchange
from tests.polling import wait_until

# moto_only: the document and the answers are the API's own, whatever stores the orders.
pytestmark = [pytest.mark.e2e, pytest.mark.moto_only]

PACKAGE = "brokerage_client"
ISIN = "US5949181045"
GENERATE_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def generated(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    """The generated package's modules this file uses, generated from the served document into a temp dir."""
    out = tmp_path_factory.mktemp("typed-client")
    document = requests.get(f"{stack.api_url}/openapi.json", timeout=10)
    document.raise_for_status()
    (out / "openapi.json").write_text(json.dumps(document.json()), encoding="utf-8")
    # No post hooks: they format the code with ruff from PATH, which says nothing about the document.
    (out / "config.yaml").write_text(f"post_hooks: []\npackage_name_override: {PACKAGE}\n", encoding="utf-8")
    generator = Path(sys.executable).parent / "openapi-python-client"
    command = [str(generator), "generate", "--path", "openapi.json", "--config", "config.yaml", "--meta", "none"]
    result = subprocess.run(
        [*command, "--output-path", PACKAGE],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT_S,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Warning" not in output, output  # a schema or operation it could not generate
    sys.path.insert(0, str(out))
    try:
        names = ("client", "models", "api.orders.create_order", "api.orders.get_order", "api.orders.list_orders")
        names += ("api.orders.replace_order", "api.orders.cancel_order", "api.orders.get_order_by_client_order_id")
        return {name: importlib.import_module(f"{PACKAGE}.{name}") for name in names}
    finally:
        sys.path.remove(str(out))


@pytest.fixture
def account(stack: LocalStack) -> Account:
    return new_account(stack, "typed-client")


def client_for(generated: dict[str, ModuleType], account: Account) -> Any:
    return generated["client"].AuthenticatedClient(base_url=account.api_url, token=account.api_key)


def placed(generated: dict[str, ModuleType], client: Any, order_id: uuid.UUID) -> Any:
    order = generated["api.orders.get_order"].sync(order_id=order_id, client=client)
    return order if order.status.value in ("placed", "partially_filled") else None


def test_the_generated_client_creates_reads_lists_replaces_and_cancels(
    generated: dict[str, ModuleType], account: Account, exchange: Exchange
) -> None:
    # The order rests at the exchange until canceled: open for the replace.
    exchange.configure(reject_rate=0.0, cancel_rate=0.0, limit_ttl_s=None, limit_outcome="rest")
    models, client = generated["models"], client_for(generated, account)
    key = f"typed-{uuid.uuid4().hex[:8]}"
    body = models.OrderRequest.from_dict(
        {"type": "limit", "side": "buy", "instrument": ISIN, "quantity": 5, "limit_price": 0.5, "client_order_id": key}
    )
    created = generated["api.orders.create_order"].sync_detailed(client=client, body=body)
    assert created.status_code == 201, created.content
    order = created.parsed
    assert isinstance(order, models.OrderResponse)
    assert (order.status.value, order.quantity, order.client_order_id) == ("pending", 5, key)

    wait_until(partial(placed, generated, client, order.id), timeout_s=60)
    page = generated["api.orders.list_orders"].sync(client=client)
    assert order.id in [listed.id for listed in page.orders]
    found = generated["api.orders.get_order_by_client_order_id"].sync(client_order_id=key, client=client)
    assert found.id == order.id

    replace = generated["api.orders.replace_order"]
    answer = replace.sync_detailed(
        order_id=order.id, client=client, body=models.ReplaceRequest.from_dict({"quantity": 7})
    )
    assert answer.status_code == 202, answer.content
    replacement = answer.parsed
    assert isinstance(replacement, models.OrderResponse)
    assert (replacement.replaces, replacement.quantity) == (order.id, 7)
    original = generated["api.orders.get_order"].sync(order_id=order.id, client=client)
    assert (original.status.value, original.replaced_by) == ("pending_replace", replacement.id)

    canceled = generated["api.orders.cancel_order"].sync_detailed(order_id=replacement.id, client=client)
    assert canceled.status_code in (200, 202), canceled.content
    assert isinstance(canceled.parsed, models.OrderResponse)


def test_a_refusal_parses_into_the_documented_error_model(generated: dict[str, ModuleType], account: Account) -> None:
    models, client = generated["models"], client_for(generated, account)
    # A limit order without its limit price: valid JSON for the generated model, refused by the API.
    body = models.OrderRequest.from_dict({"type": "limit", "side": "buy", "instrument": ISIN, "quantity": 5})
    answer = generated["api.orders.create_order"].sync_detailed(client=client, body=body)
    assert answer.status_code == 422
    assert isinstance(answer.parsed, models.ValidationErrorResponse)
    assert [error.field for error in answer.parsed.errors] == ["limit_price"]
