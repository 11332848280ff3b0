"""Operator tools for the brokerage backend (not deployed): inspect orders and queues, redrive dead letters."""
