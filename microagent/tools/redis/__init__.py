"""Redis backends: a signal bus on pub/sub and an at-least-once queue broker on Streams.

DSN ``redis://[[user]:password@]host:port/db`` or ``rediss://`` (TLS,
certificates verified). Nothing connects until first use::

    bus = RedisSignalBus('redis://localhost/7')
    broker = RedisBroker('redis://localhost/7')
    await broker.user_created.send({'user_id': 1})

See :mod:`microagent.tools.redis._bus` and :mod:`microagent.tools.redis._broker`
for how signals, queues, retries, dead letters and reclaiming work.
"""
from __future__ import annotations

from ._broker import RedisBroker
from ._bus import RedisSignalBus
from ._lease import RedisLease

__all__ = ['RedisBroker', 'RedisLease', 'RedisSignalBus']
