"""A NATS server with JetStream for tests: the machine's on 127.0.0.1:4222, else one started here.

``address()`` returns ``host:port`` of a running server: ``$MICROAGENT_NATS``
if set, else whatever answers NATS on 127.0.0.1:4222, else a
``nats-server -js`` started here (on 4222 when free, otherwise on a free
port) with a store directory of its own, stopped at exit. Under ``CI=true``
a missing ``nats-server`` fails the tests that need it.

CI (``scripts/services``) starts the machine's one before the tests::

    nats-server -a 127.0.0.1 -p 4222 -js -sd .ci/nats-store
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys

import pytest

from reliability.servers import NATSServer, speaks_nats

from .services import IN_CI

DEFAULT_PORT = 4222
HOST = '127.0.0.1'
_SHARED: dict[str, str] = {}


def address() -> str:
    """host:port of a NATS server with JetStream for this test session (started here if needed)."""
    if 'addr' not in _SHARED:
        _SHARED['addr'] = os.environ.get('MICROAGENT_NATS') or _find_or_start()
    return _SHARED['addr']


def _find_or_start() -> str:
    if speaks_nats(DEFAULT_PORT):
        return f'{HOST}:{DEFAULT_PORT}'
    if not NATSServer.available():
        raise RuntimeError('nats-server is not installed (apt-get install nats-server)')
    server = NATSServer().start()
    atexit.register(server.close)
    return f'{HOST}:{server.port}'


def require_nats() -> str:
    """``nats://host:port`` of :func:`address`, or skip (locally) / fail (CI=true) when none can be had."""
    try:
        return f'nats://{address()}'
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(f'no NATS server: {exc}')
        pytest.skip(f'no NATS server: {exc}')


if __name__ == '__main__':
    print(address(), shutil.which('nats-server'), file=sys.stderr)
