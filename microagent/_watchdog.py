"""Handler timeouts with one timer per consumer instead of one per message."""
from __future__ import annotations

import asyncio
import collections
from typing import Any

__all__ = ['Watch', 'Watchdog']


class Watch:
    """One handler run under a watchdog; ``fired`` once the watchdog cancelled it."""

    __slots__ = ('deadline', 'fired', 'task')

    def __init__(self, deadline: float, task: asyncio.Task[Any] | None) -> None:
        self.deadline = deadline
        self.task = task
        self.fired = False

    def done(self) -> None:
        self.task = None


class Watchdog:
    """Cancels handler tasks that outlive *timeout*.

    Every handler of a consumer shares one timeout, so deadlines come in the
    order the handlers started: a FIFO of watches and a single timer armed
    for the oldest one replace a timer per message (``asyncio.timeout``
    schedules and cancels one each time, a tenth of a consumer's CPU).

    >>> import asyncio
    >>> dog = Watchdog(30.0)
    >>> async def handler():
    ...     watch = dog.watch()   # the handler's task is cancelled if it outlives 30 s
    ...     try:
    ...         return await asyncio.sleep(0, 'done')
    ...     finally:
    ...         watch.done()
    >>> await handler()
    'done'
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._watches: collections.deque[Watch] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self) -> Watch:
        """Watch the current task from now until ``done()``."""
        loop = asyncio.get_running_loop()
        watch = Watch(loop.time() + self.timeout, asyncio.current_task())
        watches = self._watches
        while watches and watches[0].task is None:
            watches.popleft()
        watches.append(watch)
        if self._timer is None:
            self._timer = loop.call_at(watch.deadline, self._fire)
        elif len(watches) > 1024 and len(watches) > 4 * sum(w.task is not None for w in watches):
            # A long handler at the head keeps finished ones queued behind it: compact now and then.
            self._watches = collections.deque(w for w in watches if w.task is not None)
        return watch

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        watches = self._watches
        while watches and (watches[0].task is None or watches[0].deadline <= now):
            watch = watches.popleft()
            if watch.task is not None and not watch.task.done():
                watch.fired = True
                watch.task.cancel()
        if watches:
            self._timer = loop.call_at(watches[0].deadline, self._fire)

    def close(self) -> None:
        """Disarm the timer (the consumer is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watches.clear()
