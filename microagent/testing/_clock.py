"""A virtual clock: time moves only when the test says so, and everything due then runs in order.

Schedules read the time with ``clock.time`` and wait with ``clock.sleep``; the
memory backend delays retries and injected delays with ``clock.call_later``.
``advance`` wakes each timer at its own deadline, earliest first, letting the
woken work finish before the next one: an hour of a ``*/15 * * * * *`` cron
takes milliseconds.

>>> clock = VirtualClock('2026-01-01T00:00:00+00:00')
>>> fired = []
>>> _ = clock.call_later(90, lambda: fired.append(clock.datetime().isoformat()))
>>> await clock.advance(120)
>>> fired, clock.datetime().isoformat()
(['2026-01-01T00:01:30+00:00'], '2026-01-01T00:02:00+00:00')
"""
from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable

from ..exceptions import ConfigurationError

__all__ = ['VirtualClock', 'spin']

Moment = float | dt.datetime | str


class _Timer:
    __slots__ = ('callback', 'cancelled', 'deadline', 'seq', 'waiting')

    def __init__(self, deadline: float, seq: int, callback: Callable[[], None], waiting: bool) -> None:
        self.deadline, self.seq, self.callback, self.waiting = deadline, seq, callback, waiting
        self.cancelled = False

    def __lt__(self, other: _Timer) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)

    def cancel(self) -> None:
        self.cancelled = True


async def spin(rounds: int = 20) -> None:
    """Let ready tasks run for *rounds* loop turns (time does not move meanwhile)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class VirtualClock:
    """Wall-clock seconds that only move on :meth:`advance`, :meth:`advance_to` or :meth:`jump`.

    *start* is epoch seconds, an aware ``datetime`` or an ISO 8601 string
    (default: the real time now). ``settle`` is awaited after every timer
    fires (a :class:`~microagent.testing.Harness` sets it to its own
    ``settle``; the default lets ready tasks run for a few loop turns).
    """

    def __init__(self, start: Moment | None = None) -> None:
        self.now = time.time() if start is None else to_seconds(start)
        self.settle: Callable[[], Awaitable[None]] = spin
        self._timers: list[_Timer] = []
        self._seq = itertools.count()

    def __repr__(self) -> str:
        return f'<VirtualClock {self.datetime().isoformat()} timers={self.pending()}>'

    def time(self) -> float:
        """The virtual time in epoch seconds (what ``ScheduledTask.clock`` expects)."""
        return self.now

    def datetime(self) -> dt.datetime:
        """The virtual time as an aware UTC datetime."""
        return dt.datetime.fromtimestamp(self.now, dt.UTC)

    async def sleep(self, delay: float, *, background: bool = False) -> None:
        """Wait until the clock has advanced *delay* seconds.

        ``background`` marks a sleep that is not work in progress (a schedule
        loop waiting for its next tick): :meth:`waiting` does not count it.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self._push(delay, wake, waiting=not background)
        try:
            await future
        finally:
            timer.cancel()

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        """Call *callback* when the clock reaches now + *delay*; ``.cancel()`` the result to forget it."""
        return self._push(delay, callback, waiting=False)

    def pending(self) -> int:
        """Timers not yet fired (sleeps and callbacks)."""
        return sum(not t.cancelled for t in self._timers)

    def waiting(self) -> int:
        """Tasks asleep on this clock that are work in progress (not background sleeps)."""
        return sum(t.waiting and not t.cancelled for t in self._timers)

    def next_deadline(self) -> float | None:
        """When the earliest timer fires, if any."""
        live = [t.deadline for t in self._timers if not t.cancelled]
        return min(live) if live else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by *seconds*, firing each timer at its own deadline, in order."""
        if seconds < 0:
            raise ConfigurationError(f'VirtualClock.advance: seconds must be >= 0, got {seconds!r}')
        target = self.now + seconds
        await self.settle()
        while self._timers and self._timers[0].deadline <= target:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, timer.deadline)
            timer.callback()
            await self.settle()
        self.now = target
        await self.settle()

    async def advance_to(self, moment: Moment) -> None:
        """Advance to *moment* (epoch seconds, aware datetime or ISO string); it may not be in the past."""
        await self.advance(to_seconds(moment) - self.now)

    async def jump(self, seconds: float) -> None:
        """Move time forward at once, as after a suspended process: every timer due fires late."""
        if seconds < 0:
            raise ConfigurationError(f'VirtualClock.jump: seconds must be >= 0, got {seconds!r}')
        self.now += seconds
        while self._timers and self._timers[0].deadline <= self.now:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()
        await self.settle()

    def _push(self, delay: float, callback: Callable[[], None], waiting: bool) -> _Timer:
        timer = _Timer(self.now + max(float(delay), 0.0), next(self._seq), callback, waiting)
        heapq.heappush(self._timers, timer)
        return timer


def to_seconds(moment: Moment) -> float:
    """Epoch seconds of *moment*: a number, an aware datetime or an ISO 8601 string with an offset.

    >>> to_seconds('1970-01-01T00:01:00Z')
    60.0
    """
    if isinstance(moment, int | float) and not isinstance(moment, bool):
        return float(moment)
    if isinstance(moment, str):
        try:
            moment = dt.datetime.fromisoformat(moment)
        except ValueError:
            raise ConfigurationError(f'not an ISO 8601 time: {moment!r}') from None
    if not isinstance(moment, dt.datetime) or moment.utcoffset() is None:
        raise ConfigurationError(f'a time needs a time zone (an aware datetime or an offset): {moment!r}')
    return moment.timestamp()
