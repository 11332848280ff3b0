"""Unit tests of the use cases, against in-memory fakes of the adapters."""
