"""The Redis backend on a private Redis Cluster (3 masters, 3 replicas: ``tests/redis_cluster.py``)."""
from __future__ import annotations

import weakref
from typing import Any

import redis

from microagent import Catalog
from microagent.tools.redis import RedisBroker, RedisSignalBus

from ..redis_cluster import LocalCluster, require_cluster, shared
from . import BackendSpec

PREFIX = 'microagent-test'
_watched: weakref.WeakSet[Catalog] = weakref.WeakSet()


def _prepare() -> None:
    require_cluster()


def _forget(queues: dict[str, Any], cluster: LocalCluster) -> None:
    """Delete the keys of a finished test's queues (each on its own slot: one DELETE per key)."""
    if not cluster.processes:
        return  # stopped already (end of session): nothing left to delete
    try:
        with redis.RedisCluster(host='127.0.0.1', port=cluster.live_port(), socket_timeout=5) as client:
            for name in list(queues):
                for suffix in ('', '.dlq', '.delayed'):
                    client.delete(f'{PREFIX}:{{{name}}}{suffix}')
    except (redis.RedisError, OSError):
        pass


def _broker(catalog: Catalog, **options: Any) -> RedisBroker:
    cluster = shared()
    if catalog not in _watched:
        _watched.add(catalog)
        weakref.finalize(catalog, _forget, catalog.queues, cluster)
    # Short heartbeats: contract tests that stop a consumer see its messages again quickly.
    options.setdefault('heartbeat_interval', 0.5)
    options.setdefault('heartbeat_ttl', 3.0)
    return RedisBroker(cluster.dsn(), catalog=catalog, prefix=PREFIX, **options)


BACKEND = BackendSpec(
    name='redis_cluster',
    prepare=_prepare,
    make_broker=_broker,
    make_bus=lambda catalog, prefix: RedisSignalBus(shared().dsn(), catalog=catalog, prefix=prefix),
)
