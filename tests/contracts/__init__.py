"""Contract suites: one set of tests that an adapter and its in-memory fake must both pass."""
