"""Singleton lease on RabbitMQ: a single-active-consumer queue.

Every replica consumes the auto-delete queue ``name`` (declared with
``x-single-active-consumer``) and publishes a small heartbeat to it every
``ttl / 3``. RabbitMQ delivers the queue to one consumer only: the replica
receiving heartbeats holds the lease. When its connection goes (crash, kill,
close) RabbitMQ activates the next consumer at once, which starts receiving.

Guarantee: each tick runs once while the broker sees connection losses when
they happen (a killed or stopped process, a closed connection): the old
holder has no connection, so it gets no heartbeats and knows it. A fresh
holder waits ``ttl / 2`` before acting, covering an old holder whose last
heartbeat is still within its ttl. A holder cut off by a half-open TCP
connection keeps being the active consumer until RabbitMQ's heartbeat timeout
expires: no replica runs ticks meanwhile (missed, not doubled). There is no
fencing token (``token`` stays ``None``).

Not run: needs a RabbitMQ server.
>>> lease = AMQPLease('amqp://guest:guest@localhost/', 'Agent.report', ttl=5)   # doctest: +SKIP
"""
from __future__ import annotations

import ssl
import time
from typing import Any

from pamqp.commands import Basic

from ...lease import Lease
from ._connection import RobustConnection

__all__ = ['AMQPLease']


class AMQPLease(Lease):
    """A lease held by the active consumer of a single-active-consumer queue (own connection, lazy).

    The connection is the backend's own :class:`RobustConnection` (plain
    aiormq), so ``ssl_context`` works as for the broker and the bus.

    Not run: needs a RabbitMQ server.
    >>> lease = AMQPLease('amqp://guest:guest@localhost/', 'Agent.report', ttl=5)   # doctest: +SKIP
    >>> await lease.start()                                                        # doctest: +SKIP
    """

    def __init__(self, dsn: str, name: str, ttl: float, *, ssl_context: ssl.SSLContext | None = None,
                 **options: Any) -> None:
        super().__init__(dsn, name, ttl, **options)
        self.settle = self.ttl / 2
        self.connection = RobustConnection(dsn, ssl_context=ssl_context, connect_timeout=max(self.ttl, 1.0),
                                           fast_lane=False)
        self._connection: Any = None
        self._channel: Any = None
        self._last_heartbeat = float('-inf')

    async def _connect(self) -> None:
        await self._open()

    async def _open(self) -> Any:
        if self._channel is not None and not self._channel.is_closed and not self._connection.is_closed:
            return self._channel
        await self._close()
        timeout = max(self.ttl, 1.0)
        self._connection = await self.connection.get(timeout)
        # Losing the connection means losing the lease: drop it now, not at the local deadline.
        self._connection.closing.add_done_callback(lambda _: self._lost())
        channel = await self._connection.channel()
        ttl_ms = max(1, round(self.ttl * 1000))
        await channel.queue_declare(self.name, auto_delete=True, timeout=timeout,
                                    arguments={'x-single-active-consumer': True, 'x-message-ttl': ttl_ms})
        await channel.basic_consume(self.name, self._on_heartbeat, no_ack=True, timeout=timeout)
        self._channel = channel
        return channel

    async def _on_heartbeat(self, message: Any) -> None:
        self._last_heartbeat = time.monotonic()

    async def _attempt(self) -> bool:
        channel = await self._open()
        await channel.basic_publish(b'', routing_key=self.name, timeout=self.renew_interval,
                                    properties=Basic.Properties(expiration=str(max(1, round(self.ttl * 1000)))))
        # Only the active consumer receives heartbeats (ours or another replica's).
        return time.monotonic() - self._last_heartbeat < 2 * self.renew_interval

    async def _close(self) -> None:
        self._connection = self._channel = None
        self._last_heartbeat = float('-inf')
        await self.connection.close()
