"""Unit tests of the feed bridge (deployed on its own, beside the functions)."""
