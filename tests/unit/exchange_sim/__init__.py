"""Unit tests of the exchange simulator's rules (devstack/exchange_sim), in process; its process: tests/tooling."""
