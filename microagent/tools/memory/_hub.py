"""The in-process hub shared by memory buses and brokers with the same DSN in one event loop."""
from __future__ import annotations

import asyncio
import collections
import itertools
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..._message import NO_HEADERS
from ...delivery import DeadLetter
from ...exceptions import ConfigurationError

if TYPE_CHECKING:
    from ._bus import MemorySignalBus
    from ._tap import Tap, Timer

__all__ = ['Hub', 'MemoryQueue', 'Message', 'hub_for']

_HUBS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Hub]] = weakref.WeakKeyDictionary()


class Message:
    """One copy of a message in a memory queue: its copy id, body, attempt, stable id and headers."""

    __slots__ = ('attempt', 'body', 'headers', 'id', 'message_id')

    def __init__(self, id: str, body: str, attempt: int = 1, message_id: str = '',  # noqa: A002
                 headers: Mapping[str, str] = NO_HEADERS) -> None:
        self.id, self.body, self.attempt = id, body, attempt
        self.message_id, self.headers = message_id or id, headers


class MemoryQueue:
    """Ready messages, delayed retries and dead letters of one queue."""

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub = hub
        self.name = name
        self.loop = hub.loop
        self.ready: collections.deque[Message] = collections.deque()
        self.delayed: dict[str, asyncio.TimerHandle | Timer] = {}
        self.dlq: list[DeadLetter] = []
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def put(self, message: Message, *, front: bool = False) -> None:
        if front:
            self.ready.appendleft(message)
        else:
            self.ready.append(message)
        self.wake()

    def put_later(self, delay: float, message: Message) -> None:
        def due() -> None:
            self.delayed.pop(message.id, None)
            self.put(message)
        tap = self.hub.tap
        self.delayed[message.id] = (self.loop.call_later(delay, due) if tap is None
                                    else tap.call_later(self.name, delay, due))

    def settled(self, message: Message, outcome: str, error: str | None = None) -> None:
        """Tell the tap (only called when there is one); it may ask for the message again."""
        tap = self.hub.tap
        if tap is not None:
            for _ in range(tap.settled(self.name, outcome, message.body, message.attempt, error)):
                self.put(Message(message.id, message.body, message.attempt, message.message_id, message.headers))

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


class Hub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queues: dict[str, MemoryQueue] = {}
        self.channels: dict[str, set[MemorySignalBus]] = {}
        self.heads: dict[str, set[MemorySignalBus]] = {}  # channel prefixes (microagent 1.9 channels)
        self.ids = itertools.count(1)
        self.tap: Tap | None = None  # test hooks (microagent.testing); None costs one check per send

    def queue(self, name: str) -> MemoryQueue:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = MemoryQueue(self, name)
        return queue


def hub_for(dsn: str) -> Hub:
    if not dsn.startswith('memory://'):
        raise ConfigurationError(f'memory backend needs a memory:// DSN, got {dsn.split(":", 1)[0]}://')
    loop = asyncio.get_running_loop()
    hubs = _HUBS.setdefault(loop, {})
    hub = hubs.get(dsn)
    if hub is None:
        hub = hubs[dsn] = Hub(loop)
    return hub
