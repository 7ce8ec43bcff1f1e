"""Schedules: cron expressions and the loop that runs periodic and cron tasks.

Semantics of a :class:`ScheduledTask` (``@periodic`` and ``@cron``):

* **Fixed rate.** Tick times come from the schedule (``first + k * period``
  or the cron's fire times), never from the end of the previous run: no drift.
  ``jitter`` delays each run by a random ``0..jitter`` seconds without moving
  the schedule.
* **No overlap.** A tick due while the previous run is still going is skipped
  and logged (``overlap=True`` runs it anyway). A run longer than ``timeout``
  is cancelled and logged; an exception is logged; the schedule goes on.
* **Misfires.** A tick reached more than ``misfire_grace`` (1 s) late (the
  process was suspended, the loop blocked) is missed: missed ticks are
  skipped and logged, or with ``catch_up=True`` run once, right away.
* **Singleton.** With a :class:`~microagent.lease.Lease` only the replica
  holding it runs a tick (see :mod:`microagent.lease`); periodic ticks then
  sit on multiples of ``period`` since the epoch, the same in every replica.

>>> from datetime import datetime, timezone
>>> Cron('0 */4 * * *').next_after(datetime(2026, 1, 1, 1, 30, tzinfo=timezone.utc))
datetime.datetime(2026, 1, 1, 4, 0, tzinfo=zoneinfo.ZoneInfo(key='UTC'))
"""
from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._context import set_handler
from ._schedule_cron import Cron
from ._tasks import TaskSet
from .exceptions import ConfigurationError
from .lease import Lease

if TYPE_CHECKING:
    from .telemetry import Telemetry

__all__ = ['Cron', 'ScheduleStats', 'ScheduledTask', 'ThreadedJob', 'lease_ttl']


@dataclass
class ScheduleStats:
    """Counters of one schedule (handy in tests and metrics)."""

    ticks: int = 0
    runs: int = 0
    failed: int = 0
    timed_out: int = 0
    overlapped: int = 0
    missed: int = 0
    not_holder: int = 0


@dataclass(eq=False)
class ScheduledTask:
    """A periodic or cron job of an agent, run by :meth:`run` until cancelled.

    ``clock`` (wall time, seconds) and ``sleep`` are injectable so tests can
    drive ticks without waiting. ``telemetry`` (the agent's) gives each run a
    span that starts a trace.

    Not run: a fragment: ``job``, ``log``, ``runner`` and ``agent`` are the reader's.
    >>> task = ScheduledTask('Agent.job', job, timeout=1, log=log, period=5)   # doctest: +SKIP
    >>> runner.spawn(task.run())                                               # doctest: +SKIP
    """

    name: str
    handler: Callable[[], Awaitable[Any]]
    timeout: float
    log: logging.Logger
    period: float | None = None
    cron: Cron | None = None
    start_after: float = 0.0
    overlap: bool = False
    jitter: float = 0.0
    catch_up: bool = False
    singleton: bool = False
    lease: Lease | None = None
    telemetry: Telemetry | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    misfire_grace: float = 1.0
    next_run: float | None = None
    stats: ScheduleStats = field(default_factory=ScheduleStats)
    runs: TaskSet = field(init=False)

    def __post_init__(self) -> None:
        if (self.period is None) == (self.cron is None):
            raise ConfigurationError(f'{self.name}: exactly one of period and cron')
        self.runs = TaskSet(f'schedule {self.name}')

    # -- the schedule ----------------------------------------------------------------

    def first_run(self, now: float) -> float:
        """Wall-clock time of the first tick when started at *now*.

        Singleton periodic ticks sit on a grid shared by all replicas: the
        multiples of ``period`` since the Unix epoch.
        """
        if self.period is not None and self.singleton:
            return math.ceil((now + self.start_after) / self.period) * self.period
        if self.period is not None:
            return now + self.start_after
        return self.after(now)

    def after(self, moment: float) -> float:
        """The first tick strictly after *moment* (on the grid of the first tick for periodic)."""
        if self.period is not None:
            anchor = self.next_run if self.next_run is not None else moment
            return anchor + (math.floor((moment - anchor) / self.period) + 1) * self.period
        if self.cron is None:
            raise ConfigurationError(f'{self.name}: neither period nor cron')
        stamp = dt.datetime.fromtimestamp(moment, dt.UTC)
        return self.cron.next_after(stamp).timestamp()

    def interval(self) -> float:
        """The (next) distance between two ticks, used to size the singleton lease."""
        if self.period is not None:
            return self.period
        first = self.after(self.clock())
        return self.after(first) - first

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Fire on schedule until cancelled; a slow run makes later ticks skip, not pile up."""
        if self.lease is not None:
            await self.lease.start()
        try:
            due = self.first_run(self.clock())
            while True:
                self.next_run = due
                await self._sleep_until(due + (random.uniform(0, self.jitter) if self.jitter else 0.0))  # noqa: S311
                due = self._tick(due, self.clock())
        finally:
            if self.lease is not None:
                await self.lease.stop()

    async def _sleep_until(self, moment: float) -> None:
        # Re-check after waking: the wall clock may have been set back meanwhile.
        while (delay := moment - self.clock()) > 0:
            await self.sleep(delay)

    def _tick(self, due: float, now: float) -> float:
        """Handle the tick *due* reached at *now*; return the next tick."""
        grace = self.misfire_grace + self.jitter
        if now - due <= grace:
            self._fire(due)
            return self.after(now)
        # Late: ticks before the grace window are missed; one inside it still runs.
        recent = self.after(max(due, now - grace))
        on_time = recent <= now
        missed = self._count(due, recent if on_time else now)
        self.stats.missed += missed
        self.log.warning('%s: %d tick(s) missed since %s%s', self.name, missed, _iso(due),
                         ', running once now' if self.catch_up and not on_time else '')
        if on_time:
            self._fire(recent)
        elif self.catch_up:
            self._fire(due)
        return self.after(now)

    def _count(self, start: float, end: float, cap: int = 1000) -> int:
        """Ticks in [start, end), counted up to *cap*."""
        if self.period is not None:
            return max(0, math.ceil((end - start) / self.period))
        count, tick = 0, start
        while tick < end and count < cap:
            count, tick = count + 1, self.after(tick)
        return count

    def _fire(self, tick: float) -> None:
        self.stats.ticks += 1
        if self.lease is not None and not self.lease.held(tick):
            self.stats.not_holder += 1
            return
        if not self.overlap and len(self.runs):
            self.stats.overlapped += 1
            self.log.warning('%s: previous run still going, tick %s skipped', self.name, _iso(tick))
            return
        self.runs.spawn(self._once(tick), name=f'run {self.name}')

    async def _claim(self, tick: float) -> bool:
        if self.lease is None:
            return True
        try:
            if await self.lease.claim(tick):
                return True
        except Exception as exc:  # noqa: BLE001 - whatever the backend raised, this tick is not ours
            self.log.warning('%s: cannot claim tick %s, skipped: %s', self.name, _iso(tick), self.lease.masked(exc))
        self.stats.not_holder += 1
        return False

    async def _once(self, tick: float) -> None:
        set_handler(self.name)
        try:
            async with asyncio.timeout(self.timeout):
                if not await self._claim(tick):
                    return
                self.stats.runs += 1
                if self.telemetry is None:
                    await self.handler()
                else:
                    with self.telemetry.running(self.name, 'schedule', tick):
                        await self.handler()
        except TimeoutError:
            self.stats.timed_out += 1
            self.log.error('%s: run cancelled after timeout %ss', self.name, self.timeout)
        except Exception:
            self.stats.failed += 1
            self.log.exception('%s: run failed', self.name)

    def info(self) -> dict[str, Any]:
        """A JSON-serialisable description with the next run time (ISO, UTC)."""
        out: dict[str, Any] = {'handler': self.name, 'timeout': self.timeout}
        if self.period is not None:
            out['period'] = self.period
        if self.cron is not None:
            out.update(cron=self.cron.spec, timezone=self.cron.timezone)
        out.update(overlap=self.overlap, catch_up=self.catch_up, singleton=self.singleton)
        if self.lease is not None:
            out['holder'] = self.lease.held()
        nxt = self.next_run if self.next_run is not None else self.first_run(self.clock())
        out['next_run'] = _iso(nxt)
        return out


class ThreadedJob:
    """A sync ``@periodic``/``@cron`` method, run in a worker thread so the event loop never blocks.

    A thread cannot be cancelled: a run past its timeout is reported as timed
    out and goes on in its thread; ticks due meanwhile are skipped (no overlap).

    Not run: a fragment: ``job``, ``log``, ``runner`` and ``agent`` are the reader's.
    >>> job = ThreadedJob(agent.refresh_cache, 'Agent.refresh_cache', log)   # doctest: +SKIP
    >>> await job()                                                         # doctest: +SKIP
    """

    def __init__(self, func: Callable[[], Any], name: str, log: logging.Logger) -> None:
        self.func = func
        self.name = name
        self.log = log
        self.__name__ = getattr(func, '__name__', name)
        self._running: asyncio.Future[Any] | None = None
        self._waiting = False

    async def __call__(self) -> None:
        running = self._running
        if running is not None and not running.done():
            self.log.warning('%s: the previous run is still going in its thread, tick skipped', self.name)
            return
        loop = asyncio.get_running_loop()
        running = self._running = loop.run_in_executor(None, contextvars.copy_context().run, self.func)
        running.add_done_callback(self._finished)
        self._waiting = True
        try:
            # Shielded: a timeout stops the wait, not the thread (which the next tick must still see).
            await asyncio.shield(running)
        finally:
            self._waiting = False

    def _finished(self, future: asyncio.Future[Any]) -> None:
        error = None if future.cancelled() else future.exception()  # retrieved: never "never retrieved"
        if error is not None and not self._waiting:
            # Nobody waits any more (the run timed out): this is the only place to report it.
            self.log.error('%s: run failed after its timeout', self.name, exc_info=error)


def lease_ttl(interval: float) -> float:
    """The singleton lease ttl for ticks *interval* seconds apart: a takeover fits in one interval.

    >>> lease_ttl(1.0)
    0.5
    """
    return min(30.0, max(0.3, interval / 2))


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat()
