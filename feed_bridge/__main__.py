"""`python -m feed_bridge`: run the feed bridge until SIGTERM or SIGINT; settings come from the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from feed_bridge.bridge import build_bridge
from feed_bridge.settings import BridgeSettings, ConfigurationError, load_settings

log = logging.getLogger("feed_bridge")

EXIT_OK = 0
EXIT_UNCLEAN = 1  # stopped with reports not on Kinesis (they are replayed on the next start) or crashed
EXIT_CONFIGURATION = 2

ENVIRONMENT_HELP = """\
environment:
  EXCHANGE_FEED_URL            ws://127.0.0.1:8002/feed   the exchange's execution feed (wss://; ws:// to loopback only)
  EXCHANGE_CREDENTIAL_SECRET_NAME  brokerage-local-exchange-credential
                                                          Secrets Manager secret: the venue credential, sent as
                                                          Authorization: Bearer on the feed's handshake
  EXECUTIONS_STREAM_NAME       (required)                 Kinesis stream to put reports on
  FEED_CHECKPOINTS_TABLE_NAME  (required)                 DynamoDB table of checkpoints (hash key feed_id)
  FEED_ID                      exchange-sim               this feed's checkpoint item
  FEED_BATCH_SIZE              500                        records per PutRecords (1..500)
  FEED_LINGER_S                0.1                        longest wait for a batch to fill
  FEED_MAX_BUFFERED            20000                      reading pauses at this many unflushed reports
  FEED_RECONNECT_MIN_S / _MAX_S     0.1 / 5               reconnect backoff bounds (jittered)
  FEED_PUT_RETRY_MIN_S / _MAX_S     0.05 / 5              PutRecords / checkpoint retry backoff bounds
  FEED_OPEN_TIMEOUT_S          10                         WebSocket opening handshake
  FEED_SHUTDOWN_GRACE_S        10                         time to flush after SIGTERM/SIGINT
  FEED_STATS_INTERVAL_S        30                         seconds between INFO stats lines
  AWS_CONNECT_TIMEOUT_S / AWS_READ_TIMEOUT_S  2 / 10      per AWS call
  LOG_LEVEL                    INFO                       DEBUG logs one line per flush
  AWS_ENDPOINT_URL, AWS_REGION, credentials: as boto3 reads them

exit status: 0 stopped cleanly, 1 stopped with reports not flushed (replayed on the next start) or crashed,
2 invalid configuration (a bad variable, a missing stream or table)."""


def configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    # botocore and websockets at DEBUG would log every request and frame.
    for noisy in ("asyncio", "botocore", "boto3", "urllib3", "websockets"):
        logging.getLogger(noisy).setLevel(max(logging.getLogger().level, logging.WARNING))


async def serve(settings: BridgeSettings) -> bool:
    """Run the bridge until the first SIGTERM/SIGINT; a second one abandons the flush."""
    stop, force = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("%s again: abandoning the flush", signal.Signals(signum).name)
            force.set()
        else:
            log.info("%s: stopping", signal.Signals(signum).name)
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return await build_bridge(settings).run(stop, force)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m feed_bridge",
        description=__doc__,
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        configure_logging("INFO")
        log.error("%s", exc)
        return EXIT_CONFIGURATION
    configure_logging(settings.log_level)
    try:
        clean = asyncio.run(serve(settings))
    except ConfigurationError as exc:
        log.error("%s", exc)
        return EXIT_CONFIGURATION
    return EXIT_OK if clean else EXIT_UNCLEAN


if __name__ == "__main__":
    code = main()
    if code == EXIT_UNCLEAN:
        # An AWS call that outlived the grace still holds a worker thread, which
        # a normal exit would wait for (up to the AWS timeouts): leave now.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    sys.exit(code)
