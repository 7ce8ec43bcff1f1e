"""Schedules: cron expressions (on croniter) and the loops that run periodic and cron tasks.

>>> from datetime import datetime, timezone
>>> Cron('0 */4 * * *').next_after(datetime(2026, 1, 1, 1, 30, tzinfo=timezone.utc))
datetime.datetime(2026, 1, 1, 4, 0, tzinfo=datetime.timezone.utc)
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
import zoneinfo
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter

from ._tasks import TaskSet
from .exceptions import ConfigurationError

__all__ = ['Cron', 'ScheduledTask']

FIELDS = ('minute', 'hour', 'day of month', 'month', 'day of week')
FIELDS_WITH_SECONDS = ('second', *FIELDS)


class Cron:
    """A cron expression in a time zone: 5 fields, or 6 with seconds first, or ``@daily``-style.

    Standard semantics: Sunday is 0 or 7, names (``mon``, ``jan``), ranges,
    steps and lists; when both day of month and day of week are restricted a
    day matching either one fires.
    """

    def __init__(self, spec: str, timezone: str = 'UTC') -> None:
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigurationError(f'cron: spec must be a non-empty string, got {spec!r}')
        self.spec = ' '.join(spec.split())
        try:
            self.tz: dt.tzinfo = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigurationError(f'cron: unknown time zone {timezone!r}') from None
        self.timezone = timezone
        self._seconds = len(self.spec.split()) == 6
        _validate(self.spec, self._seconds)

    def __repr__(self) -> str:
        return f'Cron({self.spec!r}, timezone={self.timezone!r})'

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cron) and (self.spec, self.timezone) == (other.spec, other.timezone)

    def __hash__(self) -> int:
        return hash((self.spec, self.timezone))

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first fire time strictly after *moment* (aware), in this cron's time zone."""
        if moment.tzinfo is None:
            raise ValueError('next_after needs an aware datetime')
        local = moment.astimezone(self.tz)
        it = croniter(self.spec, local, ret_type=dt.datetime, second_at_beginning=self._seconds)
        result: dt.datetime = it.get_next(dt.datetime)
        return result


def _validate(spec: str, seconds: bool) -> None:
    parts = spec.split()
    if spec.startswith('@') and len(parts) == 1:
        nicknames = ('@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly')
        if spec.lower() not in nicknames:
            raise ConfigurationError(f'cron {spec!r}: unknown nickname, expected one of {nicknames}')
        return
    names: tuple[str, ...] = FIELDS_WITH_SECONDS if seconds else FIELDS
    if len(parts) not in (5, 6):
        raise ConfigurationError(f'cron {spec!r}: expected 5 fields ({", ".join(FIELDS)}) '
                                 'or 6 with seconds first')
    for index, part in enumerate(parts):
        probe = ['*'] * len(parts)
        probe[index] = part
        if not croniter.is_valid(' '.join(probe), second_at_beginning=seconds):
            raise ConfigurationError(f'cron {spec!r}: bad {names[index]} field {part!r}')


@dataclass(eq=False)
class ScheduledTask:
    """A periodic or cron job of an agent, run by :meth:`run` until cancelled."""

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
    next_run: float | None = None
    runs: TaskSet = field(init=False)

    def __post_init__(self) -> None:
        self.runs = TaskSet(f'schedule {self.name}')

    def first_run(self, now: float) -> float:
        """Wall-clock time of the first run when started at *now*."""
        if self.period is not None:
            return now + self.start_after
        return self._cron_after(now)

    def following(self, previous: float, now: float) -> float:
        """Next run after the one due at *previous*: on the schedule, missed ticks skipped."""
        if self.period is not None:
            nxt = previous + self.period
            if nxt <= now and not self.catch_up:
                nxt += ((now - nxt) // self.period + 1) * self.period
            return nxt
        after = previous if self.catch_up else max(previous, now)
        return self._cron_after(after)

    def _cron_after(self, moment: float) -> float:
        if self.cron is None:
            raise ConfigurationError(f'{self.name}: neither period nor cron')
        stamp = dt.datetime.fromtimestamp(moment, dt.UTC)
        return self.cron.next_after(stamp).timestamp()

    async def run(self, clock: Callable[[], float] = time.time) -> None:
        """Fire on schedule until cancelled; a slow run makes later ticks skip, not pile up."""
        due = self.first_run(clock())
        while True:
            self.next_run = due
            delay = due - clock() + (random.uniform(0, self.jitter) if self.jitter else 0.0)  # noqa: S311
            if delay > 0:
                await asyncio.sleep(delay)
            if self.overlap or not len(self.runs):
                self.runs.spawn(self._once(), name=f'run {self.name}')
            else:
                self.log.warning('%s: previous run still going, tick skipped', self.name)
            due = self.following(due, clock())

    async def _once(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.handler()
        except TimeoutError:
            self.log.error('%s: run cancelled after timeout %ss', self.name, self.timeout)
        except Exception:
            self.log.exception('%s: run failed', self.name)

    def info(self) -> dict[str, Any]:
        """A JSON-serialisable description with the next run time (ISO, UTC)."""
        out: dict[str, Any] = {'handler': self.name, 'timeout': self.timeout}
        if self.period is not None:
            out['period'] = self.period
        if self.cron is not None:
            out.update(cron=self.cron.spec, timezone=self.cron.timezone)
        nxt = self.next_run if self.next_run is not None else self.first_run(time.time())
        out['next_run'] = dt.datetime.fromtimestamp(nxt, dt.UTC).isoformat()
        return out
