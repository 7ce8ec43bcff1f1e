"""Singleton lease on Redis: ``SET NX PX`` with a fencing token, and a per-tick claim on the server.

Keys (``name`` is the lease name): ``name`` holds the owner id with a PX ttl;
``name:fence`` counts holders (the fencing token; it never expires); ``name:tick``
remembers the last tick run.

On a Redis Cluster (``redis+cluster://``) the keys are ``{name}``,
``{name}:fence`` and ``{name}:tick`` (one hash slot: the scripts touch all
three).

Guarantee: with one Redis server (no failover to a lagging replica) each tick
runs at most once, whatever the clocks do: a tick runs only after the server
confirmed, atomically, that this replica owns the lease and that no later or
equal tick ran. A holder that dies is replaced once its key expires (ttl), so
within ``ttl + ttl / 3``.

Not run: needs a Redis server.
>>> lease = RedisLease('redis://localhost/7', 'Agent.report', ttl=5)   # doctest: +SKIP
"""
from __future__ import annotations

import uuid
from typing import Any

from ...lease import Lease
from ._cluster import connector_for, is_cluster

__all__ = ['RedisLease']

# 0: someone else holds it; -1: renewed, still ours; > 0: just taken, the new fencing token
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('incr', KEYS[2])
end
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return -1
end
return 0
"""
_CLAIM = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
local last = tonumber(redis.call('get', KEYS[2]) or '-1')
if tonumber(ARGV[2]) <= last then return 0 end
redis.call('set', KEYS[2], ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisLease(Lease):
    """A lease on the Redis server of *dsn*, with its own connection (opened on first use).

    The client comes from the backend's :class:`RedisConnector` (the same
    protocol, TLS host name check and client options as the broker and bus).

    Not run: needs a Redis server.
    >>> lease = RedisLease('redis://localhost/7', 'Agent.report', ttl=5)   # doctest: +SKIP
    >>> await lease.start()                                                # doctest: +SKIP
    """

    def __init__(self, dsn: str, name: str, ttl: float, **options: Any) -> None:
        super().__init__(dsn, name, ttl, **options)
        self.owner = uuid.uuid4().hex
        timeout = max(self.renew_interval, 0.1)
        self.redis = connector_for(dsn, f'microagent.lease.{name}', socket_timeout=timeout,
                                   socket_connect_timeout=timeout)
        # One hash slot for the three keys on a cluster; one server keeps the names it always had.
        self.key = f'{{{name}}}' if is_cluster(dsn) else name

    def _redis(self) -> Any:
        return self.redis.client()

    async def _attempt(self) -> bool:
        ttl_ms = max(1, round(self.ttl * 1000))
        result = int(await self._redis().eval(_ACQUIRE, 2, self.key, f'{self.key}:fence', self.owner, ttl_ms))
        if result > 0:
            self.token = result
        return result != 0

    async def claim(self, tick: float) -> bool:
        """Held locally, and the server agrees this replica owns the lease and *tick* did not run yet."""
        if not self.held(tick):
            return False
        result = await self._redis().eval(_CLAIM, 2, self.key, f'{self.key}:tick', self.owner, f'{tick:.6f}')
        return int(result) == 1

    async def _release(self, was_held: bool) -> None:
        if was_held and self.redis.active():
            await self.redis.client().eval(_RELEASE, 1, self.key, self.owner)

    async def _close(self) -> None:
        await self.redis.close()
