"""Use cases: what the API and the Lambda handlers ask the domain and adapters to do."""
