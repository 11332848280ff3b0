"""Unit tests of the adapters that need no AWS, and the in-memory fakes held to the adapters' contracts."""
