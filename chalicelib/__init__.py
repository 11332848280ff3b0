"""Order backend of the brokerage: domain, adapters, services and Lambda entrypoints."""
