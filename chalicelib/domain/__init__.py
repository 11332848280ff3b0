"""The pure domain: orders, their states and the rules between them."""
