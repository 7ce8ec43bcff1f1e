"""Real services on loopback: skip locally when absent, fail under CI=true."""
from __future__ import annotations

import os

import pytest

from benchmarks.services import port_open

__all__ = ['IN_CI', 'port_open', 'require_port']

IN_CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


def require_port(service: str, port: int, host: str = '127.0.0.1') -> None:
    """Skip (locally) or fail (CI=true) when *service* does not listen on *port*."""
    if port_open(port, host):
        return
    message = f'{service} is not listening on {host}:{port}'
    if IN_CI:
        pytest.fail(f'{message} (CI=true: a missing service is a failure)')
    pytest.skip(message)
