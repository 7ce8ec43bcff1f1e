"""The in-memory signal bus: at-most-once signals and RPC inside one process."""
from __future__ import annotations

import functools
from typing import Any

from ...bus import AbstractSignalBus
from ...exceptions import ConfigurationError
from ._hub import Hub, hub_for

__all__ = ['MemorySignalBus']


class MemorySignalBus(AbstractSignalBus):
    """Signal bus in process memory: at-most-once delivery to every subscribed bus, and RPC.

    It binds channel prefixes too, so ``wire='microagent1'`` works here as on
    Redis (handy to try a mixed fleet in one process).

    >>> from microagent import Catalog, Signal
    >>> catalog = Catalog()
    >>> _ = Signal('user_created', ['user_id'], catalog=catalog)
    >>> bus = MemorySignalBus('memory://doc', catalog=catalog)
    >>> await bus.user_created.send('users', user_id=1)
    """

    prefix_binds = True

    def __init__(self, dsn: str = 'memory://', **options: Any) -> None:
        super().__init__(dsn, **options)
        if not dsn.startswith('memory://'):
            raise ConfigurationError('MemorySignalBus needs a memory:// DSN')
        self._bound: set[str] = set()
        self._heads: set[str] = set()

    async def send(self, channel: str, message: str) -> None:
        hub = hub_for(self.dsn)
        if hub.tap is not None:
            # The tap delays (on the next loop turn at the earliest), drops or repeats the delivery.
            for delay in hub.tap.signalled(channel, message):
                hub.tap.call_later(None, delay, functools.partial(_deliver, hub, channel, message))
            return
        for bus in tuple(hub.channels.get(channel, ())):
            # Delivered on the next loop turn, as from a network: never inside send().
            hub.loop.call_soon(bus.receiver, channel, message)
        # No await in these loops: the dict and sets cannot change under them.
        for head, buses in hub.heads.items():
            if channel.startswith(head):
                for bus in buses:
                    hub.loop.call_soon(bus.receiver, channel, message)

    async def bind(self, channel: str) -> None:
        hub_for(self.dsn).channels.setdefault(channel, set()).add(self)
        self._bound.add(channel)

    async def bind_prefix(self, head: str) -> None:
        hub_for(self.dsn).heads.setdefault(head, set()).add(self)
        self._heads.add(head)

    async def close(self) -> None:
        hub = hub_for(self.dsn)
        for channel in self._bound:
            hub.channels.get(channel, set()).discard(self)
        for head in self._heads:
            hub.heads.get(head, set()).discard(self)
        self._bound.clear()
        self._heads.clear()
        await super().close()


def _deliver(hub: Hub, channel: str, message: str) -> None:
    for bus in tuple(hub.channels.get(channel, ())):
        bus.receiver(channel, message)
