"""Cron expressions in IANA time zones: croniter matches the fields, we own the DST rules.

croniter is only asked for the next matching *naive wall-clock* time, where it
is exact. Turning wall-clock times into instants across DST changes is done
here, with the rules of Debian/Vixie cron (the ones cronie and cronsim follow):

* **Fixed-time jobs** (5 fields, minute and hour both not starting with
  ``*``, e.g. ``30 2 * * *``, ``@daily``) follow the wall clock: a time
  skipped by a spring-forward change fires once at the end of the gap
  (02:30 -> 03:00), a time repeated by a fall-back change fires once, at its
  first occurrence.
* **Every other job** (``*/5 * * * *``, ``0 * * * *``, anything with a
  seconds field) follows elapsed time: it fires at every instant whose local
  time matches, so skipped local times do not fire and the repeated hour
  fires again.

croniter reads a one-value range (``5-5``) as ``*``: such ranges are
rewritten to the single value before croniter sees them.

The day rule is POSIX's: when both day of month and day of week are
restricted (anything but a lone ``*``), a day matching either one fires.
"""
from __future__ import annotations

import datetime as dt
import re
import zoneinfo

from croniter import croniter
from croniter.croniter import CroniterError

from .exceptions import ConfigurationError

__all__ = ['Cron']

FIELDS = ('minute', 'hour', 'day of month', 'month', 'day of week')
FIELDS_WITH_SECONDS = ('second', *FIELDS)
NICKNAMES = {
    '@yearly': '0 0 1 1 *', '@annually': '0 0 1 1 *', '@monthly': '0 0 1 * *', '@weekly': '0 0 * * 0',
    '@daily': '0 0 * * *', '@midnight': '0 0 * * *', '@hourly': '0 * * * *',
}
_UTC = dt.UTC
_PROBE = dt.timedelta(hours=12)  # no zone changes its offset twice within 12 hours
_TINY = dt.timedelta(microseconds=1)


class Cron:
    """A cron expression in a time zone: 5 fields, 6 with seconds first, or a ``@daily``-style nickname.

    Standard semantics: Sunday is 0 or 7, names (``mon``, ``jan``), ranges,
    steps and lists; when both day of month and day of week are restricted a
    day matching either one fires. A bad spec raises :class:`ConfigurationError`
    (a ``ValueError``) naming the field.

    >>> from datetime import datetime, timezone
    >>> Cron('30 2 * * *', 'Europe/Berlin').next_after(datetime(2026, 3, 29, 0, 0, tzinfo=timezone.utc))
    datetime.datetime(2026, 3, 29, 3, 0, tzinfo=zoneinfo.ZoneInfo(key='Europe/Berlin'))
    """

    def __init__(self, spec: str, timezone: str = 'UTC') -> None:
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigurationError(f'cron: spec must be a non-empty string, got {spec!r}')
        self.spec = ' '.join(spec.split())
        self.tz = _zone(timezone)
        self.timezone = timezone
        self._expr = _normalize(_expand(self.spec))
        parts = self._expr.split()
        if len(parts) not in (5, 6):
            _explain(self.spec, self._expr, seconds=False)
        self._seconds = len(parts) == 6
        self._fixed = not self._seconds and not parts[0].startswith('*') and not parts[1].startswith('*')
        # croniter objects are costly to build (field expansion): keep them and move their start
        self._iters = [self._croniter(expr) for expr in _split_days(self._expr, self._checked())]
        try:
            self._naive_next(dt.datetime(2000, 1, 1))
        except CroniterError:
            raise ConfigurationError(f'cron {self.spec!r}: never fires') from None

    def _croniter(self, expr: str) -> croniter:
        return croniter(expr, dt.datetime(2000, 1, 1), second_at_beginning=self._seconds)

    def _checked(self) -> croniter:
        try:
            return self._croniter(self._expr)
        except CroniterError:
            _explain(self.spec, self._expr, self._seconds)
            raise ConfigurationError(f'cron {self.spec!r}: invalid') from None

    def __repr__(self) -> str:
        return f'Cron({self.spec!r}, timezone={self.timezone!r})'

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cron) and (self.spec, self.timezone) == (other.spec, other.timezone)

    def __hash__(self) -> int:
        return hash((self.spec, self.timezone))

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first fire time strictly after *moment* (aware), as an aware time in this cron's zone.

        >>> from datetime import datetime, timezone
        >>> Cron('0 */4 * * *').next_after(datetime(2026, 1, 1, 1, 30, tzinfo=timezone.utc))
        datetime.datetime(2026, 1, 1, 4, 0, tzinfo=zoneinfo.ZoneInfo(key='UTC'))
        """
        if not isinstance(moment, dt.datetime) or moment.utcoffset() is None:
            raise ValueError('next_after needs an aware datetime')
        found = self._next_fixed(moment) if self._fixed else self._next_elapsed(moment)
        return found.astimezone(self.tz)

    def _naive_next(self, naive: dt.datetime) -> dt.datetime:
        """The first matching wall-clock time strictly after *naive* (whole seconds)."""
        found: list[dt.datetime] = []
        for it in self._iters:
            it.set_current(naive, force=True)
            found.append(it.get_next(dt.datetime))
        return min(found)

    def _next_fixed(self, moment: dt.datetime) -> dt.datetime:
        # Walk wall-clock matches; each names one instant (see the module rules).
        naive = _wall(moment.astimezone(self.tz))
        while True:
            naive = self._naive_next(naive)
            instant = _resolve(naive, self.tz)
            if instant > moment:
                return instant

    def _next_elapsed(self, moment: dt.datetime) -> dt.datetime:
        # Between two offset changes local time is UTC plus a constant, so the
        # first wall-clock match maps straight back; past a change, go again.
        start, inclusive = moment.astimezone(_UTC), False
        while True:
            offset = _offset(start, self.tz)
            naive = _wall(start + offset) - (_TINY if inclusive else dt.timedelta(0))
            found = (self._naive_next(naive) - offset).replace(tzinfo=_UTC)
            change = _next_change(self.tz, start, found, offset)
            if change is None:
                return found
            start, inclusive = change, True


def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(f'cron: unknown time zone {name!r}') from None


def _expand(spec: str) -> str:
    if spec.startswith('@'):
        expr = NICKNAMES.get(spec.lower())
        if expr is None:
            raise ConfigurationError(f'cron {spec!r}: unknown nickname, expected one of {sorted(NICKNAMES)}')
        return expr
    return spec


_DEGENERATE = re.compile(r'^(?P<a>\w+)-(?P<b>\w+)(?:/\d+)?$')
_NAMES = {name: str(value) for names in (('jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct',
                                          'nov', 'dec'),) for value, name in enumerate(names, 1)}
_DAY_NAMES = {name: str(value) for value, name in enumerate(('sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'))}


def _normalize(expr: str) -> str:
    """Work around croniter: it reads a one-value range (``5-5``, ``mon-1/2``) as ``*``."""
    parts = expr.split()
    day_of_week = len(parts) - 1

    def value(text: str, names: dict[str, str]) -> str:
        return str(int(text)) if text.isdigit() else names.get(text.lower(), text)

    def item(text: str, names: dict[str, str]) -> str:
        m = _DEGENERATE.match(text)
        return m['a'] if m and value(m['a'], names) == value(m['b'], names) else text

    return ' '.join(','.join(item(i, _DAY_NAMES if index == day_of_week else _NAMES) for i in part.split(','))
                    for index, part in enumerate(parts))


def _split_days(expr: str, full: croniter) -> tuple[str, ...]:
    """The day rule done here, not by croniter (whose OR/AND choice varies with the spelling).

    Both day fields restricted: the earlier of "day of month" and "day of
    week" schedules. Otherwise the full field becomes ``*`` and the two AND.
    """
    parts = expr.split()
    dom, dow = len(parts) - 3, len(parts) - 1
    expanded = full.expanded
    days = set(expanded[2])  # croniter keeps seconds last internally
    weekdays = {v % 7 if isinstance(v, int) else v for v in expanded[4]}
    dom_full = '*' in days or days >= set(range(1, 32))
    dow_full = '*' in weekdays or weekdays >= set(range(7))
    if dom_full or dow_full:
        parts[dom] = '*' if dom_full else parts[dom]
        parts[dow] = '*' if dow_full else parts[dow]
        return (' '.join(parts),)
    by_dom, by_dow = list(parts), list(parts)
    by_dom[dow], by_dow[dom] = '*', '*'
    return ' '.join(by_dom), ' '.join(by_dow)


def _explain(spec: str, expr: str, seconds: bool) -> None:
    """Raise a ConfigurationError naming the first bad field of an invalid spec."""
    parts = expr.split()
    if len(parts) not in (5, 6):
        raise ConfigurationError(f'cron {spec!r}: expected 5 fields ({", ".join(FIELDS)}) '
                                 'or 6 with seconds first')
    names = FIELDS_WITH_SECONDS if seconds else FIELDS
    for index, part in enumerate(parts):
        probe = ['*'] * len(parts)
        probe[index] = part
        if not croniter.is_valid(' '.join(probe), second_at_beginning=seconds):
            raise ConfigurationError(f'cron {spec!r}: bad {names[index]} field {part!r}')


def _wall(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=None, fold=0)


def _offset(moment: dt.datetime, tz: dt.tzinfo) -> dt.timedelta:
    offset = moment.astimezone(tz).utcoffset()
    return offset if offset is not None else dt.timedelta(0)


def _exists(naive: dt.datetime, tz: dt.tzinfo) -> bool:
    aware = naive.replace(tzinfo=tz, fold=0)
    return _wall(aware.astimezone(_UTC).astimezone(tz)) == naive


def _resolve(naive: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The instant of a wall-clock time: the gap's end if skipped, the first one if repeated."""
    while not _exists(naive, tz):
        naive += dt.timedelta(minutes=1)
    return naive.replace(tzinfo=tz, fold=0).astimezone(_UTC)


def _next_change(tz: dt.tzinfo, start: dt.datetime, end: dt.datetime,
                 offset: dt.timedelta) -> dt.datetime | None:
    """The first instant in (start, end] whose UTC offset is not *offset*, if any."""
    low = start
    while low < end:
        high = min(low + _PROBE, end)
        if _offset(high, tz) != offset:
            return _bisect(tz, low, high, offset)
        low = high
    return None


def _bisect(tz: dt.tzinfo, low: dt.datetime, high: dt.datetime, offset: dt.timedelta) -> dt.datetime:
    # Invariant: offset at low is *offset*, at high it is not; offsets change on whole seconds.
    while high - low > dt.timedelta(seconds=1):
        middle = low + (high - low) / 2
        if _offset(middle, tz) == offset:
            low = middle
        else:
            high = middle
    whole = high.replace(microsecond=0)
    return whole if whole > low and _offset(whole, tz) != offset else high
