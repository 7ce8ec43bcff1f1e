"""The in-memory queue broker: the whole delivery contract inside one process."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...broker import AbstractQueueBroker
from ...delivery import ConsumerRunner, DeadLetter, Delivery
from ...exceptions import ConfigurationError
from ._hub import Hub, MemoryQueue, Message, hub_for

__all__ = ['MemoryBroker']


class _MemoryDelivery(Delivery):
    __slots__ = ('_message', '_queue')

    def __init__(self, queue: MemoryQueue, message: Message) -> None:
        super().__init__(message.body, message.attempt, message.id)
        self._queue = queue
        self._message = message

    async def ack(self) -> None:
        pass

    async def retry(self, delay: float, error: str) -> None:
        self._queue.put_later(delay, Message(self._message.id, self._message.body, self.attempt + 1))

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
    def _hub(self) -> Hub:
        return hub_for(self.dsn)

    async def send(self, name: str, message: str, **kwargs: Any) -> None:
        hub = self._hub
        hub.queue(name).put(Message(str(next(hub.ids)), message))

    async def send_many(self, name: str, messages: Sequence[str], **kwargs: Any) -> None:
        for message in messages:
            await self.send(name, message)

    async def bind(self, name: str) -> None:
        self._start_reader(name, self._read(self._hub.queue(name), self._runners[name]))

    async def _read(self, queue: MemoryQueue, runner: ConsumerRunner) -> None:
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
