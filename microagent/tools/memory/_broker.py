"""The in-memory queue broker: the whole delivery contract inside one process."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..._message import check_headers, check_message_id, message_ids_for, new_message_id
from ...broker import AbstractQueueBroker
from ...delivery import ConsumerRunner, DeadLetter, Delivery
from ...exceptions import ConfigurationError
from ._hub import Hub, MemoryQueue, Message, hub_for

__all__ = ['MemoryBroker']


class _MemoryDelivery(Delivery):
    __slots__ = ('_message', '_queue')

    def __init__(self, queue: MemoryQueue, message: Message) -> None:
        super().__init__(message.body, message.attempt, message.id, message.message_id, message.headers)
        self._queue = queue
        self._message = message

    async def ack(self) -> None:
        if self._queue.hub.tap is not None:
            self._queue.settled(self._message, 'ack')

    async def retry(self, delay: float, error: str) -> None:
        message = self._message
        if self._queue.hub.tap is not None:
            self._queue.settled(message, 'retry', error)
        self._queue.put_later(delay, Message(message.id, message.body, self.attempt + 1, message.message_id,
                                             self.headers))

    async def dead_letter(self, error: str) -> None:
        message = self._message
        if self._queue.hub.tap is not None:
            self._queue.settled(message, 'dead_letter', error)
        self._queue.dlq.append(DeadLetter(message.body, error, self.attempt, message.message_id,
                                          dict(self.headers)))

    async def release(self) -> None:
        if self._queue.hub.tap is not None:
            self._queue.settled(self._message, 'release')
        self._queue.put(self._message, front=True)


class MemoryBroker(AbstractQueueBroker):
    """Queue broker in process memory, with the same contract as the networked ones.

    >>> from microagent import Catalog, Queue
    >>> catalog = Catalog()
    >>> _ = Queue('mailer', catalog=catalog)
    >>> broker = MemoryBroker('memory://doc', catalog=catalog)
    >>> await broker.mailer.send({'to': 'a@b.c'})
    >>> await broker.mailer.length()
    1
    """

    read_ahead: ClassVar[bool] = True  # nothing is counted for a crash: a process takes its memory with it

    def __init__(self, dsn: str = 'memory://', **options: Any) -> None:
        super().__init__(dsn, **options)
        if not dsn.startswith('memory://'):
            raise ConfigurationError('MemoryBroker needs a memory:// DSN')

    @property
    def _hub(self) -> Hub:
        return hub_for(self.dsn)

    async def send(self, name: str, message: str, *, headers: Mapping[str, str] | None = None,
                   message_id: str | None = None, **options: Any) -> None:
        if options:
            self.check_options('send', options)
        hub = self._hub
        message_id = check_message_id(message_id) if message_id is not None else new_message_id()
        if hub.tap is None:
            hub.queue(name).put(Message(str(next(hub.ids)), message, 1, message_id, check_headers(headers)))
            return
        self._tapped(hub, name, message, message_id, check_headers(headers))

    async def send_many(self, name: str, messages: Sequence[str], *, headers: Mapping[str, str] | None = None,
                        message_ids: Sequence[str] | None = None, **options: Any) -> None:
        if options:
            self.check_options('send_many', options)
        hub, checked = self._hub, check_headers(headers)
        for message, message_id in zip(messages, message_ids_for(messages, message_ids), strict=True):
            if hub.tap is None:
                hub.queue(name).put(Message(str(next(hub.ids)), message, 1, message_id, checked))
            else:
                self._tapped(hub, name, message, message_id, checked)

    @staticmethod
    def _tapped(hub: Hub, name: str, body: str, message_id: str, headers: Mapping[str, str]) -> None:
        """Enqueue what the hub's tap makes of a send: dropped, duplicated or delayed copies (or an error)."""
        queue = hub.queue(name)
        for delay in hub.tap.sent(name, body) if hub.tap is not None else (0.0,):
            copy = Message(str(next(hub.ids)), body, 1, message_id, headers)
            if delay > 0:
                queue.put_later(delay, copy)
            else:
                queue.put(copy)

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
