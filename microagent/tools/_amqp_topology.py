"""Idempotent AMQP declarations of the broker's queues, dead-letter queues, delay queues and exchanges.

A *target* names what a publish needs: ``<queue>``, ``<queue>.dlq``,
``<queue>.delay.<ms>`` or ``exchange:<name>``. Queue names never contain a
dot (``[a-z_][a-z0-9_]*``), so the suffixes cannot clash with a queue.

>>> delay_ms(1.234)
1200
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiormq.abc

    from ..catalog import Catalog

__all__ = ['Topology', 'delay_ms']

# A delay queue lives this long after its last declaration: at least its TTL, so
# no message expires with it, and not for ever, so old delays do not pile up.
_DELAY_QUEUE_GRACE_MS = 60_000


def delay_ms(delay: float) -> int:
    """*delay* in milliseconds rounded to two significant digits (few distinct delay queues)."""
    ms = delay * 1000
    if ms < 1:
        return 0
    scale = 10 ** max(0, math.floor(math.log10(ms)) - 1)
    return int(round(ms / scale) * scale)


class Topology:
    """Declares targets on a channel, from the catalog's queue and exchange declarations."""

    def __init__(self, catalog: Catalog, queue_expires: float | None = None) -> None:
        self.catalog = catalog
        # x-expires of queues and their DLQs: RabbitMQ deletes them after that long unused.
        self._expires: dict[str, Any] = {'x-expires': int(queue_expires * 1000)} if queue_expires else {}

    async def declare(self, channel: aiormq.abc.AbstractChannel, target: str, timeout: float) -> None:
        """Declare *target* (and what it routes to) on *channel*; safe to repeat."""
        if target.startswith('exchange:'):
            await self._exchange(channel, target.partition(':')[2], timeout)
        elif '.delay.' in target:
            queue, _, ms = target.partition('.delay.')
            await channel.queue_declare(target, durable=True, timeout=timeout, arguments={
                'x-message-ttl': int(ms), 'x-expires': int(ms) + _DELAY_QUEUE_GRACE_MS,
                'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': queue})
        elif target.endswith('.dlq'):
            await channel.queue_declare(target, durable=True, timeout=timeout, arguments=self._expires)
        else:
            await self._queue(channel, target, timeout)

    def exchange_type(self, exchange: str) -> str:
        """``topic`` when a queue bound to *exchange* has topics, else ``fanout``."""
        queues = [q for q in self.catalog.queues.values() if q.exchange == exchange]
        return 'topic' if any(q.topics for q in queues) else 'fanout'

    async def _queue(self, channel: aiormq.abc.AbstractChannel, name: str, timeout: float) -> None:
        await channel.queue_declare(f'{name}.dlq', durable=True, timeout=timeout, arguments=self._expires)
        await channel.queue_declare(name, durable=True, timeout=timeout, arguments={
            'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': f'{name}.dlq', **self._expires})
        queue = self.catalog.queues.get(name)
        if queue is None or not queue.exchange:
            return
        kind = self.exchange_type(queue.exchange)
        await channel.exchange_declare(queue.exchange, exchange_type=kind, durable=True, timeout=timeout)
        patterns = (queue.topics or ('#',)) if kind == 'topic' else ('',)
        for pattern in patterns:
            await channel.queue_bind(name, queue.exchange, routing_key=pattern, timeout=timeout)

    async def _exchange(self, channel: aiormq.abc.AbstractChannel, exchange: str, timeout: float) -> None:
        # Declaring every queue of the exchange first: a message sent before any
        # consumer started waits in its queues, as with the other backends.
        for queue in self.catalog.queues.values():
            if queue.exchange == exchange:
                await self._queue(channel, queue.name, timeout)
