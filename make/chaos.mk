# Chaos scenarios (docs/RELIABILITY.md): the whole local stack under injected faults,
# every order checked at the end against the exchange simulator's own record.
#
#   make chaos                                         every scenario at full size (about twelve minutes)
#   make chaos CHAOS_ARGS="--scenario runner-kills --seed 42"   one scenario, a given seed
#   make chaos CHAOS_ARGS="--scenario lost-answers"    placement answers and reports lost, then convergence (issue 14)
#   make chaos CHAOS_ARGS=--small                      the sizes `make test` runs (tests/e2e/test_chaos_small.py)
#
# Progress goes to stderr, the markdown summary to stdout (and to --report FILE if
# given); each scenario's stack log lands in .local/chaos/<time>/. Exits 1 if any
# order was lost, duplicated, stuck or ended different from the exchange's record
# (lost-answers: also failed while the exchange holds it, counted as mismatched).

CHAOS_ARGS ?=

.PHONY: chaos

chaos: setup
	$(BIN)/python -m chaos $(CHAOS_ARGS)
