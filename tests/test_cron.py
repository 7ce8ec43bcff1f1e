"""Cron semantics, validation and DST rules; next_after against an independent implementation."""
from __future__ import annotations

import datetime as dt
import functools
import itertools
import random
import zoneinfo

import pytest

from microagent import ConfigurationError, cron
from microagent.schedule import Cron

from .schedule_reference import reference_next

UTC = dt.UTC
BERLIN = zoneinfo.ZoneInfo('Europe/Berlin')
NEW_YORK = zoneinfo.ZoneInfo('America/New_York')


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
       tz: dt.tzinfo = UTC, fold: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=tz, fold=fold)


def fires(spec: str, start: dt.datetime, n: int, timezone: str = 'UTC') -> list[dt.datetime]:
    c, out = Cron(spec, timezone), []
    for _ in range(n):
        start = c.next_after(start)
        out.append(start)
    return out


# -- standard semantics --------------------------------------------------------------

def test_sunday_is_0_or_7_and_names() -> None:
    start = at(2026, 1, 1)  # a Thursday
    assert fires('0 9 * * 0', start, 2) == fires('0 9 * * 7', start, 2) == fires('0 9 * * sun', start, 2)
    assert fires('0 9 * * 0', start, 1) == [at(2026, 1, 4, 9)]
    assert fires('0 0 1 feb-mar *', start, 2) == [at(2026, 2, 1), at(2026, 3, 1)]
    assert fires('0 0 * * mon-fri', start, 3) == [at(2026, 1, 2), at(2026, 1, 5), at(2026, 1, 6)]


def test_ranges_steps_lists() -> None:
    start = at(2026, 1, 1)
    assert fires('5-15/5,40 3 * * *', start, 4) == [at(2026, 1, 1, 3, 5), at(2026, 1, 1, 3, 10),
                                                    at(2026, 1, 1, 3, 15), at(2026, 1, 1, 3, 40)]
    assert fires('0 */6 * * *', start, 2) == [at(2026, 1, 1, 6), at(2026, 1, 1, 12)]


def test_one_value_ranges_are_not_everything() -> None:
    # croniter alone reads 5-5 (and mon-1, 05-5) as '*'
    assert fires('5-5 * * * *', at(2026, 1, 1), 2) == [at(2026, 1, 1, 0, 5), at(2026, 1, 1, 1, 5)]
    assert fires('0 0 * * mon-1', at(2026, 1, 1), 1) == fires('0 0 * * 05-5,1', at(2026, 1, 3), 1) == [at(2026, 1, 5)]


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    # 13th of the month OR a Friday; 2026-02-13 is a Friday (fires once).
    got = fires('0 0 13 * fri', at(2026, 2, 1), 4)
    assert got == [at(2026, 2, 6), at(2026, 2, 13), at(2026, 2, 20), at(2026, 2, 27)]
    # a step counts as a restriction too (POSIX), unlike Debian cron's quirk
    assert fires('0 0 */10 * mon', at(2026, 1, 1), 3) == [at(2026, 1, 5), at(2026, 1, 11), at(2026, 1, 12)]
    # only one restricted: AND with "every day" is just that field
    assert fires('0 0 * * mon', at(2026, 1, 1), 1) == [at(2026, 1, 5)]


@pytest.mark.parametrize(('nick', 'expected'), [
    ('@hourly', at(2026, 1, 1, 11)), ('@daily', at(2026, 1, 2)), ('@midnight', at(2026, 1, 2)),
    ('@weekly', at(2026, 1, 4)), ('@monthly', at(2026, 2, 1)), ('@yearly', at(2027, 1, 1)),
    ('@annually', at(2027, 1, 1)),
])
def test_nicknames(nick: str, expected: dt.datetime) -> None:
    assert Cron(nick).next_after(at(2026, 1, 1, 10, 30)) == expected


def test_seconds_field_comes_first() -> None:
    assert fires('*/20 * * * * *', at(2026, 1, 1, 0, 0, 5), 3) == [
        at(2026, 1, 1, 0, 0, 20), at(2026, 1, 1, 0, 0, 40), at(2026, 1, 1, 0, 1, 0)]
    # strictly after, even with a fraction of a second
    assert Cron('* * * * * *').next_after(at(2026, 1, 1).replace(microsecond=500)) == at(2026, 1, 1, 0, 0, 1)


def test_result_is_aware_in_the_cron_zone_and_input_must_be_aware() -> None:
    got = Cron('0 9 * * *', 'Europe/Berlin').next_after(at(2026, 1, 1))
    assert got.tzinfo == BERLIN and (got.hour, got.utcoffset()) == (9, dt.timedelta(hours=1))
    with pytest.raises(ValueError, match='aware'):
        Cron('* * * * *').next_after(dt.datetime(2026, 1, 1))


@pytest.mark.parametrize(('spec', 'field'), [
    ('61 * * * *', 'minute'), ('* 24 * * *', 'hour'), ('* * 0 * *', 'day of month'),
    ('* * * 13 *', 'month'), ('* * * * 8', 'day of week'), ('* * * * funday', 'day of week'),
    ('70 * * * * *', 'second'), ('0 0 * * mon-xyz', 'day of week'),
])
def test_invalid_spec_names_the_field(spec: str, field: str) -> None:
    with pytest.raises(ValueError, match=f'bad {field} field') as info:
        cron(spec)
    assert isinstance(info.value, ConfigurationError)


@pytest.mark.parametrize(('spec', 'message'), [
    ('* * *', 'expected 5 fields'), ('*', 'expected 5 fields'), ('* * * * * * *', 'expected 5 fields'),
    ('@often', 'unknown nickname'), ('', 'non-empty'),
    ('0 0 31 2 *', 'never fires'),
])
def test_invalid_spec_messages(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Cron(spec)


def test_unknown_time_zone() -> None:
    with pytest.raises(ConfigurationError, match='unknown time zone'):
        cron('* * * * *', timezone='Mars/Olympus')


# -- DST rules (written down in microagent/_schedule_cron.py and docs/scheduling.md) ---------

def test_fixed_time_in_spring_gap_fires_once_at_gap_end() -> None:
    # Berlin 2026-03-29: 02:00 -> 03:00; New York 2026-03-08: 02:00 -> 03:00
    assert fires('30 2 * * *', at(2026, 3, 28, 12), 2, 'Europe/Berlin') == [
        at(2026, 3, 29, 3, 0, tz=BERLIN), at(2026, 3, 30, 2, 30, tz=BERLIN)]
    assert fires('0,30 2 * * *', at(2026, 3, 8, 0), 2, 'America/New_York') == [
        at(2026, 3, 8, 3, 0, tz=NEW_YORK), at(2026, 3, 9, 2, 0, tz=NEW_YORK)]


def test_fixed_time_in_fall_back_fires_once_at_first_occurrence() -> None:
    # New York 2026-11-01: 02:00 EDT -> 01:00 EST, 01:30 happens twice
    got = fires('30 1 * * *', at(2026, 10, 31, 12), 2, 'America/New_York')
    assert got == [at(2026, 11, 1, 1, 30, tz=NEW_YORK, fold=0), at(2026, 11, 2, 1, 30, tz=NEW_YORK)]
    assert got[0].utcoffset() == dt.timedelta(hours=-4)
    # started during the second pass of the hour: already fired, next is tomorrow
    second_pass = at(2026, 11, 1, 1, 10, tz=NEW_YORK, fold=1)
    assert Cron('30 1 * * *', 'America/New_York').next_after(second_pass) == at(2026, 11, 2, 1, 30, tz=NEW_YORK)


def test_elapsed_time_jobs_skip_the_gap_and_repeat_the_hour() -> None:
    spring = fires('0 * * * *', at(2026, 3, 29, 0, 30, tz=BERLIN), 3, 'Europe/Berlin')
    assert [t.hour for t in spring] == [1, 3, 4]
    fall = fires('*/30 * * * *', at(2026, 10, 25, 1, 45, tz=BERLIN), 5, 'Europe/Berlin')
    assert [(t.hour, t.minute, t.fold) for t in fall] == [(2, 0, 0), (2, 30, 0), (2, 0, 1), (2, 30, 1), (3, 0, 0)]
    assert all(b.astimezone(UTC) - a.astimezone(UTC) == dt.timedelta(minutes=30) for a, b in itertools.pairwise(fall))


# -- against cronsim, an independent implementation --------------------------------------

ZONES = ('Europe/Berlin', 'America/New_York', 'UTC')
MONTHS = ('jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec')
DAYS = ('sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat')


def _item(rng: random.Random, low: int, high: int, names: tuple[str, ...] = ()) -> str:
    def value(v: int) -> str:
        return names[v - (1 if names is MONTHS else 0)] if names and v < low + len(names) and rng.random() < 0.3 \
            else str(v)
    kind = rng.random()
    if kind < 0.35:
        return value(rng.randint(low, high))
    a = rng.randint(low, high)
    b = rng.randint(a, high)
    if kind < 0.6:
        return f'{value(a)}-{value(b)}'
    if kind < 0.75 and b > a:  # (cronsim reads a one-value range with a step, 5-5/2, as 5-max/2)
        return f'{a}-{b}/{rng.randint(1, max(1, high - low))}'
    return f'*/{rng.randint(1, max(1, (high - low) // 2))}'


def _field(rng: random.Random, low: int, high: int, star: float, names: tuple[str, ...] = ()) -> str:
    if rng.random() < star:
        return '*'
    return ','.join(_item(rng, low, high, names) for _ in range(rng.choice((1, 1, 1, 2, 3))))


def random_spec(rng: random.Random) -> str:
    fields = [_field(rng, 0, 59, 0.2), _field(rng, 0, 23, 0.3), _field(rng, 1, 28 if rng.random() < .7 else 31, 0.6),
              _field(rng, 1, 12, 0.7, MONTHS), _field(rng, 0, 7, 0.6, DAYS)]
    if rng.random() < 0.15:
        fields.insert(0, _field(rng, 0, 59, 0.3))
    return ' '.join(fields)


def random_moment(rng: random.Random, zone: str) -> dt.datetime:
    if zone != 'UTC' and rng.random() < 0.6:  # close to a DST change of that zone
        tz = zoneinfo.ZoneInfo(zone)
        year = rng.randint(2020, 2030)
        change = _dst_change(tz, year, rng.choice((3, 10 if zone == 'Europe/Berlin' else 11)))
        return change + dt.timedelta(seconds=rng.randint(-3 * 3600, 3 * 3600))
    return dt.datetime.fromtimestamp(rng.randint(1_577_836_800, 1_924_991_999), UTC)


@functools.cache
def _dst_change(tz: dt.tzinfo, year: int, month: int) -> dt.datetime:
    t = dt.datetime(year, month, 1, tzinfo=UTC)
    while t.astimezone(tz).utcoffset() == (t + dt.timedelta(hours=1)).astimezone(tz).utcoffset():
        t += dt.timedelta(hours=1)
    return t + dt.timedelta(hours=1)


def test_next_after_matches_cronsim_on_random_specs_and_instants() -> None:
    rng = random.Random(20260101)
    checked = near_dst = 0
    while checked < 1500:
        zone, spec = rng.choice(ZONES), random_spec(rng)
        try:
            c = Cron(spec, zone)
        except ConfigurationError:
            continue  # e.g. "31 2" never fires
        moment = random_moment(rng, zone)
        expected = reference_next(spec, zone, moment)
        got = c.next_after(moment)
        assert got == expected and got.utcoffset() == expected.utcoffset(), (spec, zone, moment.isoformat())
        checked += 1
        near_dst += zone != 'UTC' and abs((got - moment).total_seconds()) < 6 * 3600
    assert near_dst > 100


@pytest.mark.parametrize('zone', ['Europe/Berlin', 'America/New_York'])
@pytest.mark.parametrize('spec', ['30 2 * * *', '0,15,30,45 1-3 * * *', '*/7 * * * *', '0 * * * *', '15 */2 * * *',
                                  '0 30 2 * * *', '@daily', '@hourly', '59 1 * * *', '0 2 * * *', '0 3 * * *'])
def test_every_fire_across_dst_changes_matches_cronsim(spec: str, zone: str) -> None:
    tz = zoneinfo.ZoneInfo(zone)
    for year in (2025, 2026):
        for month in ((3, 10) if zone == 'Europe/Berlin' else (3, 11)):
            moment = _dst_change(tz, year, month) - dt.timedelta(hours=5)
            c = Cron(spec, zone)
            for _ in range(40):
                got = c.next_after(moment)
                assert got == reference_next(spec, zone, moment), (spec, moment.isoformat())
                moment = got


def test_documented_examples() -> None:
    hourly = fires('@hourly', at(2026, 10, 25, 1, 30, tz=BERLIN), 3, 'Europe/Berlin')
    assert [(t.hour, t.utcoffset()) for t in hourly] == [
        (2, dt.timedelta(hours=2)), (2, dt.timedelta(hours=1)), (3, dt.timedelta(hours=1))]
    with pytest.raises(ValueError, match=r"cron '0 25 \* \* \*': bad hour field '25'"):
        cron('0 25 * * *')
