"""Unit tests of the HTTP and Lambda entrypoints, the app in process through chalice.test with fakes."""
