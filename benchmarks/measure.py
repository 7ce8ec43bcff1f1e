"""Counting what handlers really saw, and the numbers derived from it.

>>> seen = Seen(3)
>>> for i in (0, 1, 1, 2): seen.hit(i)
>>> seen.count, seen.duplicates, seen.done.is_set()
(3, 1, True)
"""
from __future__ import annotations

import asyncio
import gc
import math
import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ['Incomplete', 'Seen', 'percentile', 'rate', 'rss_mb', 'signal_figures']


class Incomplete(Exception):
    """A scenario did not see every message in time: reported as such, never as a number."""

    def __init__(self, what: str, seen: int, expected: int) -> None:
        super().__init__(f'{what}: saw {seen} of {expected} before the deadline')
        self.seen = seen
        self.expected = expected


class Seen:
    """Message ids a handler saw, with first/last times; ``done`` is set once all *expected* are in.

    Negative ids are warm-up messages: counted apart in ``warm`` so the clock
    can start once the pipes are primed.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        # A flag per id, allocated once: counting must not grow memory during the soak.
        self._flags = bytearray(expected)
        self.count = 0
        self.stray = 0
        self.duplicates = 0
        self.warm = 0
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.Event()
        self._progress = asyncio.Event()

    def hit(self, i: int) -> None:
        now = time.perf_counter()
        if i < 0:
            self.warm += 1
        elif i >= self.expected:
            self.stray += 1
        elif self._flags[i]:
            self.duplicates += 1
        else:
            if not self.count:
                self.first = now
            self._flags[i] = 1
            self.count += 1
            self.last = now
            if self.count >= self.expected:
                self.done.set()
        self._progress.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait (on progress events, no polling) until *predicate* holds, else :class:`Incomplete`."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            raise Incomplete(what, self.count, self.expected) from None

    async def all(self, timeout: float) -> None:
        """Wait until every expected id was seen."""
        await self.wait_for(lambda: self.count >= self.expected, timeout, 'messages')

    async def quiet(self, timeout: float, idle: float) -> None:
        """Wait for every id, or until nothing new arrived for *idle* seconds (lossy signals)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.count < self.expected and loop.time() < deadline:
            before = self.count
            self._progress.clear()
            try:
                async with asyncio.timeout(min(idle, max(0.0, deadline - loop.time()))):
                    await self._progress.wait()
            except TimeoutError:
                if self.count == before:
                    return


def rate(count: int, seconds: float) -> float | None:
    """Messages per second, or None when nothing can be said."""
    return count / seconds if count and seconds > 0 else None


def percentile(values: list[float], q: float) -> float:
    """The *q* (0..1) percentile by nearest rank: ``percentile([1, 2, 3, 4], 0.5) == 2``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def rss_mb() -> float:
    """Resident set size of this process in MB, after a full collection (leaks, not garbage)."""
    gc.collect()
    with open('/proc/self/statm') as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / 2**20


def end_to_end(seen: Seen, started: float, sent: float, n: int) -> dict[str, Any]:
    """The A/A2/D figures: send rate (loop only) and end-to-end rate (first send to last handled)."""
    return {
        'count': seen.count,
        'duplicates': seen.duplicates,
        'send_rate': rate(n, sent - started),
        'e2e_rate': rate(seen.count, seen.last - started),
        'seconds': seen.last - started,
    }


def signal_figures(seen: Seen, started: float, sent: float, n: int) -> dict[str, Any]:
    """The B figures: how many arrived, lost and doubled, send rate and receive rate (first send to last seen)."""
    return {'count': seen.count, 'loss': n - seen.count, 'duplicates': seen.duplicates,
            'send_rate': rate(n, sent - started), 'rate': rate(seen.count, max(seen.last, sent) - started)}
