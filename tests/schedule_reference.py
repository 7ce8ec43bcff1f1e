"""An independent cron reference for the tests: cronsim (not croniter), with POSIX day rules.

* Day rule: cronsim follows Debian cron, which ANDs day of month and day of
  week when either *starts* with ``*`` (``*/2``); microagent ORs them
  whenever both are restricted, i.e. each leaves out some day (``*/2`` does,
  ``*/1`` does not). The OR is built as the earlier of two AND schedules.
* Fixed-time jobs (5 fields, minute and hour not starting with ``*``):
  cronsim's own DST handling (Debian rules) is the reference.
* Elapsed-time jobs: cronsim loses the ``fold`` inside a repeated hour (it
  skips or repeats fire times there), so it is only asked about stretches of
  constant UTC offset (a fixed-offset zone, where there is nothing to get
  wrong); the offset changes are found here by scanning the zone.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo

from cronsim import CronSim
from cronsim.cronsim import Field

NICKNAMES = {'@yearly': '0 0 1 1 *', '@annually': '0 0 1 1 *', '@monthly': '0 0 1 * *',
             '@weekly': '0 0 * * 0', '@daily': '0 0 * * *', '@midnight': '0 0 * * *', '@hourly': '0 * * * *'}
UTC = dt.UTC


def _first_after(expr: str, tz: dt.tzinfo, moment: dt.datetime) -> dt.datetime:
    # cronsim may hand back a time at or before the start (a fixed-time job
    # started inside the repeated hour): the next fire is the first one after.
    for found in CronSim(expr, moment.astimezone(tz)):
        if found > moment:
            return found
    raise AssertionError('cronsim ran out of fire times')


def _offset(tz: dt.tzinfo, t: dt.datetime) -> dt.timedelta | None:
    return t.astimezone(tz).utcoffset()


def _change_between(tz: dt.tzinfo, start: dt.datetime, end: dt.datetime) -> dt.datetime | None:
    """The first whole second in (start, end] with another UTC offset than *start*'s."""
    base = _offset(tz, start)
    if all(_offset(tz, t) == base for t in _steps(start, end, dt.timedelta(hours=12))):
        return None
    t = start.astimezone(UTC).replace(microsecond=0)
    for unit in (dt.timedelta(hours=12), dt.timedelta(hours=1), dt.timedelta(minutes=1), dt.timedelta(seconds=1)):
        while _offset(tz, t + unit) == base:  # coarse to fine: stop one unit short of the change
            t += unit
    return t + dt.timedelta(seconds=1)


def _steps(start: dt.datetime, end: dt.datetime, unit: dt.timedelta) -> list[dt.datetime]:
    out, t = [], start
    while t < end:
        t = min(t + unit, end)
        out.append(t)
    return out


def _elapsed_after(expr: str, tz: dt.tzinfo, moment: dt.datetime) -> dt.datetime:
    start = since = moment.astimezone(UTC)  # fire times > since, in the offset of start (UTC math)
    while True:
        fixed = dt.timezone(_offset(tz, start) or dt.timedelta(0))
        found = _first_after(expr, fixed, since)
        change = _change_between(tz, start, found)
        if change is None:
            return found.astimezone(tz)
        start, since = change, change - dt.timedelta(microseconds=1)


def _after(parts: list[str], tz: dt.tzinfo, moment: dt.datetime) -> dt.datetime:
    expr = ' '.join(parts)
    fixed = len(parts) == 5 and not parts[0].startswith('*') and not parts[1].startswith('*')
    return _first_after(expr, tz, moment) if fixed else _elapsed_after(expr, tz, moment)


def _restricts(field: Field, text: str, size: int) -> bool:
    values = {v % 7 for v in field.parse(text.upper())} if field is Field.DOW else field.parse(text.upper())
    return len(values) < size


def reference_next(spec: str, timezone: str, moment: dt.datetime) -> dt.datetime:
    """The first fire time of *spec* strictly after *moment*, computed without croniter."""
    tz = zoneinfo.ZoneInfo(timezone)
    parts = NICKNAMES.get(spec, spec).split()
    dom, dow = (3, 5) if len(parts) == 6 else (2, 4)
    dom_restricted, dow_restricted = _restricts(Field.DAY, parts[dom], 31), _restricts(Field.DOW, parts[dow], 7)
    if dom_restricted and dow_restricted:
        by_dom, by_dow = list(parts), list(parts)
        by_dom[dow] = '*'
        by_dow[dom] = '*'
        return min(_after(by_dom, tz, moment), _after(by_dow, tz, moment)).astimezone(tz)
    # a field allowing every day is no restriction, however it is spelled
    parts[dom] = parts[dom] if dom_restricted else '*'
    parts[dow] = parts[dow] if dow_restricted else '*'
    return _after(parts, tz, moment).astimezone(tz)
