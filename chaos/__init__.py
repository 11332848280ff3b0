"""Chaos scenarios: the whole local stack under injected faults, checked order by order against the exchange."""
