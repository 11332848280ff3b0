"""Feed bridge: the exchange's execution feed (WebSocket) onto the executions Kinesis stream."""
