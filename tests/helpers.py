"""Test helpers: waiting on conditions without sleeping, collecting handled messages."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class Collector:
    """Records calls and lets a test wait until there are *n* of them."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    def __len__(self) -> int:
        return len(self.items)

    async def wait(self, n: int, timeout: float = 10.0) -> list[Any]:
        async with asyncio.timeout(timeout):
            while len(self.items) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.items


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll an (async or sync) *predicate* until it is truthy; fail after *timeout*."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f'condition not met within {timeout}s')
        await asyncio.sleep(interval)


def recording_agent(queue: Any, seen: Collector, fails: Callable[[int, int], bool] = lambda n, attempt: False,
                    **options: Any) -> Any:
    """An agent class consuming *queue* (messages ``{'n': int}``) that records, per delivery,
    ``(n, attempt, message_id, headers)``; it raises when ``fails(n, attempt)``."""
    from microagent import MicroAgent, consumer
    from microagent.delivery import current_delivery

    class Recorder(MicroAgent):
        @consumer(queue, **options)
        async def handle(self, n: int) -> None:
            delivery = current_delivery()
            if delivery is None:
                raise AssertionError('no current delivery inside a handler')
            seen.add((n, delivery.attempt, delivery.message_id, dict(delivery.headers)))
            if fails(n, delivery.attempt):
                raise RuntimeError(f'attempt {delivery.attempt} of {n} fails')
    return Recorder
