"""LocalStack Lambda runtime executor for host processes; see executor.py."""
