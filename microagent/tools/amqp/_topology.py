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

Queue types. Every queue is ``classic`` unless the broker's ``queue_type``
(or its ``queue_types`` entry for the queue) says ``quorum``: then the queue,
its retry queues and its dead-letter queue are quorum queues (replicated by
Raft over the cluster's nodes), whose dead-lettering (retry queue back into
the queue, rejects into the DLQ) is ``at-least-once`` (it needs
``x-overflow: reject-publish``; no length limit is set, so nothing is
rejected). RabbitMQ cannot change a queue's type: a queue that exists with
the other type is an error naming the queue and the setting, never adopted.

A queue or exchange that already exists with other arguments (declared by the
other format) is *adopted*: declared passively from then on, i.e. used as it
is. So a fleet switches format one agent at a time; ``migrate-queue`` (see
``AMQPBroker.migrate_queue``) gives a queue our arguments when convenient.

>>> retry_queue('mailer', 2)
'mailer.retry.2'
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...exceptions import ConfigurationError

if TYPE_CHECKING:
    import aiormq.abc

    from ...catalog import Catalog

__all__ = ['QUEUE_TYPES', 'RETRY_QUEUE_EXPIRES', 'Topology', 'retry_queue']

QUEUE_TYPES = ('classic', 'quorum')

# A retry queue is deleted this long after its last declaration (every retry declares
# it): far longer than any message waits in it (the broker checks max_retry_delay), so
# none expires with it, and the same for every process, as RabbitMQ requires of the
# arguments of one queue.
RETRY_QUEUE_EXPIRES = 3600.0
_RETRY = '.retry.'
_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)' for (queue|exchange) '([^']+)'")
# What a quorum queue's declaration has and a classic one's has not (ours): a mismatch on one of these is a type.
_QUORUM_ONLY = frozenset({'x-queue-type', 'x-dead-letter-strategy', 'x-overflow'})
_QUORUM = {'x-queue-type': 'quorum', 'x-dead-letter-strategy': 'at-least-once', 'x-overflow': 'reject-publish'}


def retry_queue(queue: str, retry: int) -> str:
    """The queue where copies of *queue*'s messages wait for their ``retry + 1``-th attempt."""
    return f'{queue}{_RETRY}{retry}'


class Topology:
    """Declares targets on a channel, from the catalog's queue and exchange declarations."""

    def __init__(self, catalog: Catalog, queue_expires: float | None = None, *, legacy: bool = False,
                 queue_type: str = 'classic', queue_types: Mapping[str, str] | None = None) -> None:
        self.catalog = catalog
        self.legacy = legacy
        self.queue_type = queue_type
        self.queue_types = dict(queue_types or {})
        for name, kind in [('queue_type', queue_type), *self.queue_types.items()]:
            if kind not in QUEUE_TYPES:
                raise ConfigurationError(f'AMQP: {name}: queue type {kind!r}, expected one of {QUEUE_TYPES}')
        if legacy and 'quorum' in (queue_type, *self.queue_types.values()):
            raise ConfigurationError("AMQP: queue_type='quorum' needs wire='native': microagent 1.9 declares "
                                     'its queues classic and not durable (see docs/migrating.md)')
        self.adopted: set[str] = set()  # queues and exchanges found with other arguments: used as they are
        # x-expires of queues and their DLQs: RabbitMQ deletes them after that long unused.
        self._expires: dict[str, Any] = {'x-expires': int(queue_expires * 1000)} if queue_expires else {}

    def type_of(self, name: str) -> str:
        """The type of queue *name* (or of the queue a retry or dead-letter queue *name* belongs to)."""
        queue = name.partition(_RETRY)[0].removesuffix('.dlq')
        return self.queue_types.get(queue, self.queue_type)

    def _typed(self, name: str, arguments: dict[str, Any], *, dead_letters: bool = True) -> dict[str, Any]:
        """*arguments* for queue *name*, with a quorum queue's (at-least-once dead-lettering where it has any)."""
        if self.type_of(name) != 'quorum':
            return arguments
        if not dead_letters:
            return {**arguments, 'x-queue-type': 'quorum'}
        return {**arguments, **_QUORUM}

    async def declare(self, channel: aiormq.abc.AbstractChannel, target: str, timeout: float) -> None:
        """Declare *target* (and what it routes to) on *channel*; safe to repeat."""
        if target.startswith('exchange:'):
            await self._exchange(channel, target.partition(':')[2], timeout)
        elif _RETRY in target:
            queue = target.partition(_RETRY)[0]
            await self._declare(channel, target, timeout, durable=True, arguments=self._typed(target, {
                'x-expires': int(RETRY_QUEUE_EXPIRES * 1000),
                'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': queue}))
        elif target.endswith('.dlq'):
            await self._dlq(channel, target, timeout)
        else:
            await self._queue(channel, target, timeout)

    async def _declare(self, channel: aiormq.abc.AbstractChannel, name: str, timeout: float, **options: Any) -> None:
        """``queue.declare`` with *options*, or passive for an adopted queue (it exists: used as it is)."""
        if name in self.adopted:
            await channel.queue_declare(name, passive=True, timeout=timeout)
        else:
            await channel.queue_declare(name, timeout=timeout, **options)

    async def _dlq(self, channel: aiormq.abc.AbstractChannel, name: str, timeout: float) -> None:
        await self._declare(channel, name, timeout, durable=True,
                            arguments=self._typed(name, self._expires, dead_letters=False))

    def adopt(self, exc: BaseException) -> str | None:
        """The queue or exchange RabbitMQ found *exc* (inequivalent arguments) for, now adopted; else None.

        ConfigurationError where the queue exists with the other type (it cannot be used as it is).
        """
        found = _INEQUIVALENT.search(str(exc))
        if found is None or found.group(3) in self.adopted:
            return None
        argument, kind, name = found.groups()
        if kind == 'queue' and (self.type_of(name) == 'quorum' or argument in _QUORUM_ONLY):
            self._wrong_type(name, argument)
        self.adopted.add(name)
        return name

    def _wrong_type(self, name: str, argument: str) -> None:
        wanted = self.type_of(name)
        other = 'classic' if wanted == 'quorum' else 'quorum'
        queue = name.partition(_RETRY)[0].removesuffix('.dlq')
        setting = f'queue_types[{queue!r}]' if queue in self.queue_types else 'queue_type'
        of = f' (of queue {queue!r})' if name != queue else ''
        move = ('retry queues expire an hour after their last use' if _RETRY in name
                else f'or move queue {queue!r} and its DLQ with migrate_queue (microagent migrate-queue)')
        raise ConfigurationError(
            f"AMQP: queue {name!r}{of} exists as a {other} queue (RabbitMQ found {argument!r} inequivalent), "
            f"but this broker's {setting} is {wanted!r}, and RabbitMQ cannot change a queue's type: "
            f"set {setting}={other!r}, {move}")

    def exchange_type(self, exchange: str) -> str:
        """``topic`` when a queue bound to *exchange* has topics, else ``fanout``."""
        queues = [q for q in self.catalog.queues.values() if q.exchange == exchange]
        return 'topic' if any(q.topics for q in queues) else 'fanout'

    async def _queue(self, channel: aiormq.abc.AbstractChannel, name: str, timeout: float) -> None:
        await self._dlq(channel, f'{name}.dlq', timeout)
        if self.legacy:
            await self._declare(channel, name, timeout, durable=False)
        else:
            await self._declare(channel, name, timeout, durable=True, arguments=self._typed(name, {
                'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': f'{name}.dlq', **self._expires}))
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
