"""Unit tests by layer: domain, service, adapters, entrypoints.

Their shared helpers: fakes.py, helpers.py, venue.py, in_process.py (and tests/contracts).
"""
