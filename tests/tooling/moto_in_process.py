"""moto in this process (mock_aws), for the tests of our patches of moto itself."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from unittest import mock

from moto import mock_aws


@contextlib.contextmanager
def in_process_moto() -> Iterator[None]:
    """mock_aws with no AWS_ENDPOINT_URL* in the environment: a session whose emulator fixture set one would send
    the clients to that server, past the in-process moto the test patches."""
    with mock.patch.dict(os.environ):
        for name in [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL")]:
            del os.environ[name]
        with mock_aws():
            yield
