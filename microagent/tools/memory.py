"""In-memory signal bus and queue broker: the whole contract inside one process.

Buses and brokers built with the same DSN in the same event loop share one
hub, so agents in one process talk to each other exactly as they would over
Redis, RabbitMQ or Kafka (acks, retries, dead letters, exchanges, RPC)::

    bus = MemorySignalBus('memory://')
    broker = MemoryBroker('memory://')

``memory://other`` is a separate hub. Nothing crosses processes.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import weakref
from collections.abc import Sequence
from typing import Any

from ..broker import AbstractQueueBroker
from ..bus import AbstractSignalBus
from ..delivery import ConsumerRunner, DeadLetter, Delivery
from ..exceptions import ConfigurationError

__all__ = ['MemoryBroker', 'MemorySignalBus']

_HUBS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Hub]] = weakref.WeakKeyDictionary()


class _Message:
    __slots__ = ('attempt', 'body', 'id')

    def __init__(self, id: str, body: str, attempt: int = 1) -> None:  # noqa: A002
        self.id, self.body, self.attempt = id, body, attempt


class _Queue:
    """Ready messages, delayed retries and dead letters of one queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ready: collections.deque[_Message] = collections.deque()
        self.delayed: dict[str, asyncio.TimerHandle] = {}
        self.dlq: list[DeadLetter] = []
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def put(self, message: _Message, *, front: bool = False) -> None:
        if front:
            self.ready.appendleft(message)
        else:
            self.ready.append(message)
        self.wake()

    def put_later(self, delay: float, message: _Message) -> None:
        def due() -> None:
            self.delayed.pop(message.id, None)
            self.put(message)
        self.delayed[message.id] = self.loop.call_later(delay, due)

    def wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def wait_ready(self) -> None:
        while not self.ready:
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.wake()  # pass the wake-up on: we were woken but leave
                raise


class _Hub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queues: dict[str, _Queue] = {}
        self.channels: dict[str, set[MemorySignalBus]] = {}
        self.ids = itertools.count(1)

    def queue(self, name: str) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = _Queue(self.loop)
        return queue


def _hub(dsn: str) -> _Hub:
    if not dsn.startswith('memory://'):
        raise ConfigurationError(f'memory backend needs a memory:// DSN, got {dsn.split(":", 1)[0]}://')
    loop = asyncio.get_running_loop()
    hubs = _HUBS.setdefault(loop, {})
    hub = hubs.get(dsn)
    if hub is None:
        hub = hubs[dsn] = _Hub(loop)
    return hub


class _MemoryDelivery(Delivery):
    __slots__ = ('_message', '_queue')

    def __init__(self, queue: _Queue, message: _Message) -> None:
        super().__init__(message.body, message.attempt, message.id)
        self._queue = queue
        self._message = message

    async def ack(self) -> None:
        pass

    async def retry(self, delay: float, error: str) -> None:
        self._queue.put_later(delay, _Message(self._message.id, self._message.body, self.attempt + 1))

    async def dead_letter(self, error: str) -> None:
        self._queue.dlq.append(DeadLetter(self._message.body, error, self.attempt))

    async def release(self) -> None:
        self._queue.put(self._message, front=True)


class MemoryBroker(AbstractQueueBroker):
    """Queue broker in process memory, with the same contract as the networked ones.

    >>> broker = MemoryBroker('memory://')            # doctest: +SKIP
    >>> await broker.mailer.send({'to': 'a@b.c'})     # doctest: +SKIP
    """

    def __init__(self, dsn: str = 'memory://', **options: Any) -> None:
        super().__init__(dsn, **options)
        if not dsn.startswith('memory://'):
            raise ConfigurationError('MemoryBroker needs a memory:// DSN')

    @property
    def _hub(self) -> _Hub:
        return _hub(self.dsn)

    async def send(self, name: str, message: str, **kwargs: Any) -> None:
        hub = self._hub
        hub.queue(name).put(_Message(str(next(hub.ids)), message))

    async def send_many(self, name: str, messages: Sequence[str], **kwargs: Any) -> None:
        for message in messages:
            await self.send(name, message)

    async def bind(self, name: str) -> None:
        self._start_reader(name, self._read(self._hub.queue(name), self._runners[name]))

    async def _read(self, queue: _Queue, runner: ConsumerRunner) -> None:
        while runner.active:
            free = await runner.wait_slots()
            await queue.wait_ready()
            for _ in range(min(free, len(queue.ready))):
                runner.submit(_MemoryDelivery(queue, queue.ready.popleft()))
            if queue.ready:
                queue.wake()

    async def queue_length(self, name: str, **options: Any) -> int:
        queue = self._hub.queue(name)
        return len(queue.ready) + len(queue.delayed)

    async def dead_letters(self, name: str, limit: int = 100) -> list[DeadLetter]:
        return self._hub.queue(name).dlq[:limit]


class MemorySignalBus(AbstractSignalBus):
    """Signal bus in process memory: at-most-once delivery to every subscribed bus, and RPC.

    >>> bus = MemorySignalBus('memory://')                  # doctest: +SKIP
    >>> await bus.user_created.send('users', user_id=1)     # doctest: +SKIP
    """

    def __init__(self, dsn: str = 'memory://', **options: Any) -> None:
        super().__init__(dsn, **options)
        if not dsn.startswith('memory://'):
            raise ConfigurationError('MemorySignalBus needs a memory:// DSN')
        self._bound: set[str] = set()

    async def send(self, channel: str, message: str) -> None:
        hub = _hub(self.dsn)
        for bus in tuple(hub.channels.get(channel, ())):
            # Delivered on the next loop turn, as from a network: never inside send().
            hub.loop.call_soon(bus.receiver, channel, message)

    async def bind(self, channel: str) -> None:
        _hub(self.dsn).channels.setdefault(channel, set()).add(self)
        self._bound.add(channel)

    async def close(self) -> None:
        hub = _hub(self.dsn)
        for channel in self._bound:
            hub.channels.get(channel, set()).discard(self)
        self._bound.clear()
        await super().close()
