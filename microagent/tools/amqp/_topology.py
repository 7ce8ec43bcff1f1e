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

With ``legacy=True`` (``wire='microagent1'``) queues and exchanges are declared
as microagent 1.9 declares them: not durable and without arguments, so agents of
both can declare and use the same ones (RabbitMQ refuses a second declaration
with other arguments). Retry and dead-letter queues are still ours.

A queue or exchange that already exists with other arguments (declared by the
other format) is *adopted*: declared passively from then on, i.e. used as it
is. So a fleet switches format one agent at a time; ``migrate-queue`` (see
``AMQPBroker.migrate_queue``) gives a queue our arguments when convenient.

>>> retry_queue('mailer', 2)
'mailer.retry.2'
"""
from __future__ import annotations

import re
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
_INEQUIVALENT = re.compile(r"inequivalent arg '[^']+' for (?:queue|exchange) '([^']+)'")


def retry_queue(queue: str, retry: int) -> str:
    """The queue where copies of *queue*'s messages wait for their ``retry + 1``-th attempt."""
    return f'{queue}{_RETRY}{retry}'


class Topology:
    """Declares targets on a channel, from the catalog's queue and exchange declarations."""

    def __init__(self, catalog: Catalog, queue_expires: float | None = None, *, legacy: bool = False) -> None:
        self.catalog = catalog
        self.legacy = legacy
        self.adopted: set[str] = set()  # queues and exchanges found with other arguments: used as they are
        # x-expires of queues and their DLQs: RabbitMQ deletes them after that long unused.
        self._expires: dict[str, Any] = {'x-expires': int(queue_expires * 1000)} if queue_expires else {}

    async def declare(self, channel: aiormq.abc.AbstractChannel, target: str, timeout: float) -> None:
        """Declare *target* (and what it routes to) on *channel*; safe to repeat."""
        if target.startswith('exchange:'):
            await self._exchange(channel, target.partition(':')[2], timeout)
        elif _RETRY in target:
            queue = target.partition(_RETRY)[0]
            await self._declare(channel, target, timeout, durable=True, arguments={
                'x-expires': int(RETRY_QUEUE_EXPIRES * 1000),
                'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': queue})
        elif target.endswith('.dlq'):
            await self._declare(channel, target, timeout, durable=True, arguments=self._expires)
        else:
            await self._queue(channel, target, timeout)

    async def _declare(self, channel: aiormq.abc.AbstractChannel, name: str, timeout: float, **options: Any) -> None:
        """``queue.declare`` with *options*, or passive for an adopted queue (it exists: used as it is)."""
        if name in self.adopted:
            await channel.queue_declare(name, passive=True, timeout=timeout)
        else:
            await channel.queue_declare(name, timeout=timeout, **options)

    def adopt(self, exc: BaseException) -> str | None:
        """The queue or exchange RabbitMQ found *exc* (inequivalent arguments) for, now adopted; else None."""
        found = _INEQUIVALENT.search(str(exc))
        if found is None or found.group(1) in self.adopted:
            return None
        self.adopted.add(found.group(1))
        return found.group(1)

    def exchange_type(self, exchange: str) -> str:
        """``topic`` when a queue bound to *exchange* has topics, else ``fanout``."""
        queues = [q for q in self.catalog.queues.values() if q.exchange == exchange]
        return 'topic' if any(q.topics for q in queues) else 'fanout'

    async def _queue(self, channel: aiormq.abc.AbstractChannel, name: str, timeout: float) -> None:
        await self._declare(channel, f'{name}.dlq', timeout, durable=True, arguments=self._expires)
        if self.legacy:
            await self._declare(channel, name, timeout, durable=False)
        else:
            await self._declare(channel, name, timeout, durable=True, arguments={
                'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': f'{name}.dlq', **self._expires})
        queue = self.catalog.queues.get(name)
        if queue is None or not queue.exchange:
            return
        kind = self.exchange_type(queue.exchange)
        if queue.exchange in self.adopted:
            await channel.exchange_declare(queue.exchange, passive=True, timeout=timeout)
        else:
            await channel.exchange_declare(queue.exchange, exchange_type=kind, durable=not self.legacy,
                                           timeout=timeout)
        patterns = (queue.topics or ('#',)) if kind == 'topic' else ('',)
        for pattern in patterns:
            await channel.queue_bind(name, queue.exchange, routing_key=pattern, timeout=timeout)

    async def _exchange(self, channel: aiormq.abc.AbstractChannel, exchange: str, timeout: float) -> None:
        # Declaring every queue of the exchange first: a message sent before any
        # consumer started waits in its queues, as with the other backends.
        for queue in self.catalog.queues.values():
            if queue.exchange == exchange:
                await self._queue(channel, queue.name, timeout)
