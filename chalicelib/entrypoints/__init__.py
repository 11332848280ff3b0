"""Thin entrypoints: parse HTTP requests and Lambda events, call the service layer."""
