"""Noticing that this process stopped running for a while: the Kafka zombie fence.

A consumer-group member that does not run (SIGSTOP, a suspended VM, an event
loop blocked by CPU-bound code) for longer than its session timeout is
expelled, and its partitions go to another member. When it runs again, its
fetch buffer still holds records of those partitions, and aiokafka hands them
out before the next heartbeat tells it that it is no longer a member: the
zombie handles a whole backlog that the new owner handles too.

:class:`StallWatch` is a timer that should fire every *interval* seconds; a
firing that comes more than *limit* seconds late means the process did not
run meanwhile. The reader then gives the fetched records back (seek) and asks
the coordinator whether it is still a member before handing out anything::

    watch = StallWatch(limit=5.0, interval=1.0)
    watch.start()
    ...
    if watch.stalled():      # SIGSTOPped for 20 s: fence, probe, then clear()
        ...
    watch.close()
"""
from __future__ import annotations

import asyncio

__all__ = ['StallWatch']


class StallWatch:
    """A self-rescheduling timer that remembers when it ran more than *limit* seconds late.

    Not run: needs a Kafka broker.
    >>> watch = StallWatch(limit=5.0, interval=1.0)   # doctest: +SKIP
    >>> watch.start(); watch.stalled()                # doctest: +SKIP
    False
    """

    __slots__ = ('_due', '_handle', '_loop', '_stalled', 'interval', 'limit')

    def __init__(self, limit: float, interval: float) -> None:
        self.limit = limit
        self.interval = interval
        self._stalled = False
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f'<StallWatch limit={self.limit}s stalled={self._stalled}>'

    def start(self) -> None:
        """Start ticking on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._schedule()

    def stalled(self) -> bool:
        """Whether the process stopped running for over *limit* since the last :meth:`clear`.

        Also true while the timer itself is overdue: after a SIGCONT the data
        that arrived meanwhile may be handed out before the late timer fires.
        """
        if self._loop is not None and self._loop.time() - self._due > self.limit:
            self._stalled = True
        return self._stalled

    def mark(self) -> None:
        """Treat the member as suspect now (a commit was refused: the group moved on without it)."""
        self._stalled = True

    def clear(self) -> None:
        """The stall is dealt with (membership confirmed, or the group rebalanced)."""
        self._stalled = False

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None

    def _schedule(self) -> None:
        if self._loop is None:
            return
        self._due = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        if self._loop is not None and self._loop.time() - self._due > self.limit:
            self._stalled = True
        self._schedule()
