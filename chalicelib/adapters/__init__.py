"""Adapters to storage, queues and the exchange, behind small interfaces."""
