"""Real services on loopback: skip locally when absent, fail under CI=true."""
from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


def port_open(port: int, host: str = '127.0.0.1', timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_port(service: str, port: int, host: str = '127.0.0.1') -> None:
    """Skip (locally) or fail (CI=true) when *service* does not listen on *port*."""
    if port_open(port, host):
        return
    message = f'{service} is not listening on {host}:{port}'
    if IN_CI:
        pytest.fail(f'{message} (CI=true: a missing service is a failure)')
    pytest.skip(message)
