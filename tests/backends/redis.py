from __future__ import annotations

import weakref
from typing import Any

import redis

from microagent import Catalog
from microagent.tools.redis import RedisBroker, RedisSignalBus

from ..services import require_port
from . import BackendSpec

DSN = 'redis://127.0.0.1:6379/15'
PREFIX = 'microagent-test'
_watched: weakref.WeakSet[Catalog] = weakref.WeakSet()


def _prepare() -> None:
    require_port('redis', 6379)


def _forget(queues: dict[str, Any]) -> None:
    """Delete the keys of a finished test's queues (each test has its own catalog and queue names)."""
    keys = [f'{PREFIX}:{name}{suffix}' for name in list(queues) for suffix in ('', '.dlq', '.delayed')]
    client = redis.Redis.from_url(DSN, socket_timeout=5)
    try:
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass
    finally:
        client.close()


def _broker(catalog: Catalog, **options: Any) -> RedisBroker:
    if catalog not in _watched:
        _watched.add(catalog)
        weakref.finalize(catalog, _forget, catalog.queues)
    # Short heartbeats: contract tests that stop a consumer see its messages again quickly.
    options.setdefault('heartbeat_interval', 0.5)
    options.setdefault('heartbeat_ttl', 3.0)
    return RedisBroker(DSN, catalog=catalog, prefix=PREFIX, **options)


BACKEND = BackendSpec(
    name='redis',
    prepare=_prepare,
    make_broker=_broker,
    make_bus=lambda catalog, prefix: RedisSignalBus(DSN, catalog=catalog, prefix=prefix),
)
