"""Idempotent AMQP declarations of the broker's queues, dead-letter queues, delay queues and exchanges.

A *target* names what a publish needs: ``<queue>``, ``<queue>.dlq``,
``<queue>.retry.<n>`` or ``exchange:<name>``. Queue names never contain a
dot (``[a-z_][a-z0-9_]*``), so the suffixes cannot clash with a queue.

Retry queues are numbered by retry (``<queue>.retry.1`` holds the copies
waiting for their second attempt, ``.retry.2`` for their third...), each
message with its own ``expiration``; expired, it is dead-lettered back into
``<queue>``. One queue per retry keeps the set small and enumerable
(``queue_length`` counts them: ``.retry.1``, ``.retry.2``... up to the first
that does not exist), and the delays in one of them differ only by jitter,
so a message waits little behind a longer one (RabbitMQ expires messages at
the head of a queue only).

>>> retry_queue('mailer', 2)
'mailer.retry.2'
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiormq.abc

    from ...catalog import Catalog

__all__ = ['RETRY_QUEUE_EXPIRES', 'Topology', 'retry_queue']

# A retry queue is deleted this long after its last declaration (every retry declares
# it): far longer than any message waits in it (the broker checks max_retry_delay), so
# none expires with it, and the same for every process, as RabbitMQ requires of the
# arguments of one queue.
RETRY_QUEUE_EXPIRES = 3600.0
_RETRY = '.retry.'


def retry_queue(queue: str, retry: int) -> str:
    """The queue where copies of *queue*'s messages wait for their ``retry + 1``-th attempt."""
    return f'{queue}{_RETRY}{retry}'


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
        elif _RETRY in target:
            queue = target.partition(_RETRY)[0]
            await channel.queue_declare(target, durable=True, timeout=timeout, arguments={
                'x-expires': int(RETRY_QUEUE_EXPIRES * 1000),
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
