"""Mocks for the bus and the broker, built on :mod:`unittest.mock` only.

    from microagent.tools.mocks import BusMock, BrokerMock

    agent = EmailAgent(bus=BusMock(), broker=BrokerMock())
    await agent.send_emails(user_id=1)
    agent.broker.statistic_collector.send.assert_called_once_with({'user_id': 1})
    agent.bus.user_created.send.assert_called()

Every ``bus.<signal>`` has ``send``, ``call`` (returns ``{}`` unless told
otherwise) and ``waiter``; every ``broker.<queue>`` has ``send``,
``send_many`` and ``length`` (returns 0). ``await broker.<queue>(msg)`` is
recorded on ``send``, like the real alias. With ``strict=True`` unknown names
raise and signal arguments are checked, as the real backends do.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import AsyncMock, MagicMock

from ..catalog import DEFAULT_CATALOG, Catalog
from ..exceptions import QueueNotFound

__all__ = ['BoundQueueMock', 'BoundSignalMock', 'BrokerMock', 'BusMock']


class BoundSignalMock:
    """``bus.<signal>``: ``send``, ``call`` and ``waiter`` are mocks you can assert on."""

    def __init__(self, name: str, responses: list[Any] | None = None) -> None:
        self.name = name
        self.send = AsyncMock(name=f'{name}.send')
        self.call = AsyncMock(name=f'{name}.call', return_value={})
        self.responses: list[Any] = responses or []
        self.waiter = MagicMock(name=f'{name}.waiter', side_effect=self._waiter)

    async def __call__(self, sender: str, **kwargs: Any) -> None:
        await self.send(sender, **kwargs)

    @contextlib.asynccontextmanager
    async def _waiter(self, sender: str, timeout: float = 60, **kwargs: Any) -> AsyncIterator[AsyncIterator[Any]]:
        async def stream() -> AsyncIterator[Any]:
            for response in self.responses:
                yield response
        yield stream()


class BoundQueueMock:
    """``broker.<queue>``: ``send``, ``send_many`` and ``length`` are mocks you can assert on."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.send = AsyncMock(name=f'{name}.send')
        self.send_many = AsyncMock(name=f'{name}.send_many')
        self.length = AsyncMock(name=f'{name}.length', return_value=0)

    async def __call__(self, message: dict[str, Any], **options: Any) -> None:
        await self.send(message, **options)


class BusMock:
    """A signal bus that records instead of sending.

    >>> bus = BusMock()
    >>> bus.user_created.send.assert_not_called()
    """

    def __init__(self, *, catalog: Catalog | None = None, strict: bool = False) -> None:
        self.catalog = catalog or DEFAULT_CATALOG
        self.strict = strict
        self.receivers: dict[str, list[Any]] = {}
        self.bind_receiver = AsyncMock(name='bind_receiver')
        self.unbind_receivers = MagicMock(name='unbind_receivers')
        self.send = AsyncMock(name='send')
        self.bind = AsyncMock(name='bind')
        self.close = AsyncMock(name='close')
        self._signals: dict[str, BoundSignalMock] = {}

    def __repr__(self) -> str:
        return '<BusMock>'

    def __getattr__(self, name: str) -> BoundSignalMock:
        if name.startswith('_'):
            raise AttributeError(name)
        signals = self.__dict__['_signals']
        if name not in signals:
            signals[name] = self._make(name)
        return signals[name]  # type: ignore[no-any-return]

    def _make(self, name: str) -> BoundSignalMock:
        bound = BoundSignalMock(name)
        if self.strict:
            # Raises SignalNotFound for unknown names, like a real bus.
            signal = self.catalog.signal(name)
            bound.send.side_effect = lambda sender, **kwargs: signal.check(kwargs)
            bound.call.side_effect = _checked_call(signal)
        return bound


def _checked_call(signal: Any) -> Any:
    def check(sender: str, timeout: float = 60, **kwargs: Any) -> Any:
        signal.check(kwargs)
        return {}
    return check


class BrokerMock:
    """A queue broker that records instead of sending.

    >>> broker = BrokerMock()
    >>> broker.mailer.send.assert_not_called()
    """

    def __init__(self, *, catalog: Catalog | None = None, strict: bool = False) -> None:
        self.catalog = catalog or DEFAULT_CATALOG
        self.strict = strict
        self.bind_consumer = AsyncMock(name='bind_consumer')
        self.unbind = AsyncMock(name='unbind', return_value=0)
        self.send = AsyncMock(name='send')
        self.bind = AsyncMock(name='bind')
        self.queue_length = AsyncMock(name='queue_length', return_value=0)
        self.close = AsyncMock(name='close')
        self._queues: dict[str, BoundQueueMock] = {}

    def __repr__(self) -> str:
        return '<BrokerMock>'

    def __getattr__(self, name: str) -> BoundQueueMock:
        if name.startswith('_'):
            raise AttributeError(name)
        queues = self.__dict__['_queues']
        if name not in queues:
            if self.strict and name not in self.catalog.queues and not self.catalog.is_exchange(name):
                raise QueueNotFound(f'BrokerMock: no queue or exchange {name!r} is declared')
            queues[name] = BoundQueueMock(name)
        return queues[name]  # type: ignore[no-any-return]

