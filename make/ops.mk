# Operator tools (docs/operations.md).
#
#   make redrive                    local stack: reopen dead-lettered orders, put set-aside execution reports back
#   make redrive STAGE=prod         the same on a deployed stage, with your AWS credentials
#   make redrive OPS_ARGS=--dry-run say what would happen, change nothing (also: --max N, --json)
#   make ops                        the command-line tool's help: order, queues, dlq, redrive
#
# The local stack listens where `make run` says ("AWS emulator: http://..."):
# export that URL as AWS_ENDPOINT_URL first.

OPS_ARGS ?=
# STAGE counts only if given on the command line or in the environment:
# make/deploy.mk defaults it to dev, and a redrive must never reach a
# deployed stage unless asked to.
OPS_STAGE := $(if $(filter command line environment,$(origin STAGE)),$(STAGE),local)

.PHONY: redrive ops

redrive: setup
	$(BIN)/python -m ops redrive --stage $(OPS_STAGE) $(OPS_ARGS)

ops: setup
	@$(BIN)/python -m ops --help
	@echo
	@echo "make redrive [STAGE=local|dev|prod] [OPS_ARGS='--dry-run --max N --json']"
	@echo "e.g. $(BIN)/python -m ops order <order id> --stage $(OPS_STAGE); see docs/operations.md"
