"""The exchange simulator: a stand-in exchange on loopback; orders in over HTTP/JSON, executions out over WebSocket.

Run it as `python -m devstack.exchange_sim` (`__main__`). Its rooms, each importing only the ones above it:
`config` (knobs), `orders` (requests and decisions), `time_in_force` (when a resting order expires),
`fill_plans` (what an accepted or triggered order will get), `prices` (the price paths stop orders
watch), `feed_log` (every report, in seq order), `scheduler` (due steps, off the request threads),
`state` (the exchange itself), `feed_server` (WebSocket) and `http_api` (HTTP/JSON).
"""
