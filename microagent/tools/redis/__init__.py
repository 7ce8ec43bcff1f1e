"""Redis backends: a signal bus on pub/sub and an at-least-once queue broker on Streams.

DSN ``redis://[[user]:password@]host:port/db`` or ``rediss://`` (TLS,
certificates verified); a Redis Cluster is
``redis+cluster://[[user]:password@]host:port[,host:port...]`` (or
``rediss+cluster://``; any reachable node is enough to find the others,
database 0 only; see :mod:`microagent.tools.redis._cluster` and
``docs/scaling.md``). Nothing connects until first use::

    bus = RedisSignalBus('redis://localhost/7')
    broker = RedisBroker('redis://localhost/7')
    await broker.user_created.send({'user_id': 1})
    broker = RedisBroker('redis+cluster://10.0.0.1:7000,10.0.0.2:7000', min_replicas=1)

See :mod:`microagent.tools.redis._bus` and :mod:`microagent.tools.redis._broker`
for how signals, queues, retries, dead letters and reclaiming work.
"""
from __future__ import annotations

from ._broker import RedisBroker
from ._bus import RedisSignalBus
from ._lease import RedisLease

__all__ = ['RedisBroker', 'RedisLease', 'RedisSignalBus']
