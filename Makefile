# Two commands matter: `make run` and `make test`. Both set up what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test lint unit tooling integration e2e bench clean

# Re-installs only when a requirements file changed since the last install.
$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/python -m devstack.stack

test: setup lint
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app.py chalicelib devstack bench feed_bridge ops chaos infra/build_template.py infra/expand_template.py

# Not part of `make test`: figures, not assertions. Each compares with a baseline of the same run.
bench: setup
	$(BIN)/python -m bench.cold_start
	$(BIN)/python -m bench.orders
	$(BIN)/python -m bench.executions
	$(BIN)/python -m bench.calls
	$(BIN)/python -m bench.reconcile
	$(BIN)/python -m bench.order_stream
	$(BIN)/python -m bench.idle_polling --seconds 10
	$(BIN)/python -m bench.capacity

unit: setup
	$(BIN)/python -m pytest tests/unit

tooling: setup
	$(BIN)/python -m pytest tests/tooling

integration: setup
	$(BIN)/python -m pytest tests/integration

e2e: setup
	$(BIN)/python -m pytest tests/e2e

# Optional parts (e.g. LocalStack) keep their targets in make/*.mk.
-include make/*.mk

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
