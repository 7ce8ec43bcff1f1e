"""A controllable clock for schedule tests: time moves only when the test says so."""
from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    """``clock.time`` and ``clock.sleep`` for ScheduledTask; ``advance`` runs due sleepers in order."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def time(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(delay, 0.0), next(self._ids), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own deadline."""
        target = self.now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, deadline)
            if not future.done():
                future.set_result(None)
            await settle()
        self.now = target
        await settle()

    async def jump(self, seconds: float) -> None:
        """Move time forward at once, as after a suspended process: sleepers all wake late."""
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let ready tasks run (fake time does not move meanwhile)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
