"""Periodic and cron loops on a controllable clock: fixed rate, no overlap, timeouts, misfires, jitter."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from microagent import ConfigurationError, MicroAgent, cron, on, periodic
from microagent._tasks import TaskSet
from microagent.schedule import Cron, ScheduledTask, lease_ttl
from microagent.testing import Harness, VirtualClock

from .helpers import eventually

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a whole minute


@pytest.fixture
async def loops() -> AsyncIterator[TaskSet]:
    tasks = TaskSet('test schedules')
    yield tasks
    await tasks.cancel()


def make(clock: VirtualClock, handler: Callable[[], Awaitable[Any]], **options: Any) -> ScheduledTask:
    options.setdefault('timeout', 60)
    return ScheduledTask('T.job', handler, log=logging.getLogger('test.schedule'),
                         clock=clock.time, sleep=clock.sleep, **options)


def recorder(clock: VirtualClock, runs: list[float], busy: float = 0.0) -> Callable[[], Awaitable[None]]:
    async def job() -> None:
        runs.append(clock.now - START)
        if busy:
            await clock.sleep(busy)
    return job


async def test_fixed_rate_without_drift(loops: TaskSet) -> None:
    clock, runs = VirtualClock(START), []
    task = make(clock, recorder(clock, runs, busy=3), period=10)
    loops.spawn(task.run())
    await clock.advance(95)
    assert runs == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]  # a 3 s run does not push the next tick


async def test_start_after(loops: TaskSet) -> None:
    clock, runs = VirtualClock(START), []
    loops.spawn(make(clock, recorder(clock, runs), period=10, start_after=4).run())
    await clock.advance(30)
    assert runs == [4, 14, 24]


async def test_tick_skipped_while_previous_run_goes_on(loops: TaskSet, caplog: pytest.LogCaptureFixture) -> None:
    clock, runs = VirtualClock(START), []
    task = make(clock, recorder(clock, runs, busy=25), period=10)
    loops.spawn(task.run())
    await clock.advance(65)
    assert runs == [0, 30, 60]
    assert task.stats.overlapped == 4
    assert 'previous run still going' in caplog.text


async def test_overlap_allowed(loops: TaskSet) -> None:
    clock, runs = VirtualClock(START), []
    task = make(clock, recorder(clock, runs, busy=25), period=10, overlap=True)
    loops.spawn(task.run())
    await clock.advance(45)
    assert runs == [0, 10, 20, 30, 40]
    assert len(task.runs) == 2  # the runs of 30 and 40 still going


async def test_timeout_cancels_the_run_and_the_schedule_goes_on(loops: TaskSet,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    clock, started, cancelled = VirtualClock(START), [], []

    async def stuck() -> None:
        started.append(clock.now)
        try:
            await asyncio.sleep(30)  # real time: the timeout is real
        except asyncio.CancelledError:
            cancelled.append(clock.now)
            raise

    task = make(clock, stuck, period=10, timeout=0.05)
    loops.spawn(task.run())
    await clock.advance(1)
    await eventually(lambda: task.stats.timed_out == 1)
    await clock.advance(10)
    await eventually(lambda: task.stats.timed_out == 2)
    assert len(started) == 2 and len(cancelled) == 2
    assert 'run cancelled after timeout 0.05s' in caplog.text


async def test_exception_is_logged_and_the_schedule_goes_on(loops: TaskSet,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    clock, runs = VirtualClock(START), []

    async def broken() -> None:
        runs.append(clock.now)
        raise RuntimeError('boom')

    task = make(clock, broken, period=5)
    loops.spawn(task.run())
    await clock.advance(12)
    assert len(runs) == 3 and task.stats.failed == 3
    assert 'run failed' in caplog.text and 'boom' in caplog.text


async def test_jitter_delays_runs_but_not_the_schedule(loops: TaskSet) -> None:
    clock, runs = VirtualClock(START), []
    task = make(clock, recorder(clock, runs), period=10, jitter=3)
    loops.spawn(task.run())
    await clock.advance(100)
    assert len(runs) == 10
    assert all(10 * i <= t <= 10 * i + 3 for i, t in enumerate(runs)), runs
    assert len({round(t % 10, 6) for t in runs}) > 1  # actually jittered
    assert task.next_run == START + 100


async def test_missed_ticks_are_skipped_by_default(loops: TaskSet, caplog: pytest.LogCaptureFixture) -> None:
    clock, runs = VirtualClock(START), []
    task = make(clock, recorder(clock, runs), period=10)
    loops.spawn(task.run())
    await clock.advance(15)
    await clock.jump(52)  # suspended from 15 to 67: ticks 20..60 missed
    await clock.advance(20)
    assert runs == [0, 10, 70, 80]
    assert task.stats.missed == 5
    assert '5 tick(s) missed' in caplog.text


async def test_missed_ticks_run_once_with_catch_up(loops: TaskSet) -> None:
    clock, runs = VirtualClock(START), []
    task = make(clock, recorder(clock, runs), period=10, catch_up=True)
    loops.spawn(task.run())
    await clock.advance(15)
    await clock.jump(52)
    await clock.advance(20)
    assert runs == [0, 10, 67, 70, 80]  # one catch-up run at 67, then back on the grid
    assert task.stats.missed == 5


async def test_slightly_late_tick_still_runs(loops: TaskSet) -> None:
    clock, runs = VirtualClock(START), []
    task = make(clock, recorder(clock, runs), period=10)
    loops.spawn(task.run())
    await clock.advance(5)
    await clock.jump(5.5)  # tick 10 reached at 10.5: within the misfire grace
    await clock.advance(10)
    assert runs == [0, 10.5, 20]
    assert task.stats.missed == 0


async def test_cron_ticks_on_a_controllable_clock(loops: TaskSet) -> None:
    clock, runs = VirtualClock(START), []
    task = make(clock, recorder(clock, runs), cron=Cron('*/15 * * * * *'))
    loops.spawn(task.run())
    await clock.advance(3600)
    assert runs[:4] == [15, 30, 45, 60] and len(runs) == 240
    assert task.next_run == START + 3615


async def test_cron_daily_job_after_downtime(loops: TaskSet) -> None:
    for catch_up, expected in ((False, []), (True, [36_000])):
        clock, runs = VirtualClock(START - 8 * 3600), []  # 00:00 UTC
        task = make(clock, recorder(clock, runs), cron=Cron('0 3 * * *'), catch_up=catch_up)
        spawned = loops.spawn(task.run())
        await clock.advance(3600)
        await clock.jump(9 * 3600)  # down from 01:00 to 10:00: the 03:00 run is missed
        assert [r + 8 * 3600 for r in runs] == expected
        assert task.stats.missed == 1
        assert task.next_run == START - 8 * 3600 + 27 * 3600  # 03:00 tomorrow
        spawned.cancel()


def test_info_lists_next_run() -> None:
    clock = VirtualClock(START)
    task = make(clock, recorder(clock, []), cron=Cron('0 9 * * *', 'Europe/Berlin'))
    info = task.info()
    assert info['next_run'] == '2027-01-16T08:00:00+00:00'
    assert info['cron'] == '0 9 * * *' and info['timezone'] == 'Europe/Berlin'
    assert info['singleton'] is False and info['catch_up'] is False


def test_task_needs_period_or_cron() -> None:
    with pytest.raises(ConfigurationError, match='exactly one'):
        ScheduledTask('x', recorder(VirtualClock(), []), 1, logging.getLogger())


def test_lease_ttl_fits_a_takeover_in_one_interval() -> None:
    assert lease_ttl(1) == 0.5
    assert lease_ttl(0.1) == 0.3
    assert lease_ttl(3600) == 30


# -- decorators and the agent -------------------------------------------------------------

def test_decorators_validate_at_decoration_time() -> None:
    with pytest.raises(ConfigurationError, match='bad hour field'):
        cron('0 25 * * *')
    with pytest.raises(ValueError, match='period must be a positive number'):
        periodic(0)
    with pytest.raises(ValueError, match='jitter must be a number >= 0'):
        periodic(1, jitter=-1)


def test_agent_builds_schedules_and_info() -> None:
    class Reporter(MicroAgent):
        @periodic(period=5, timeout=2, start_after=1, jitter=0.5, overlap=True)
        async def tick(self) -> None: ...

        @cron('0 9 * * mon-fri', timeout=60, timezone='America/New_York', catch_up=True)
        async def report(self) -> None: ...

    agent = Reporter()
    by_name = {t.name: t for t in agent.schedules}
    tick, report = by_name['Reporter.tick'], by_name['Reporter.report']
    assert (tick.period, tick.timeout, tick.start_after, tick.jitter, tick.overlap) == (5, 2, 1, 0.5, True)
    assert report.cron == Cron('0 9 * * mon-fri', 'America/New_York') and report.catch_up
    infos = {s['handler']: s for s in agent.info()['schedules']}
    assert infos['Reporter.report']['next_run'].endswith('+00:00')
    assert infos['Reporter.tick']['period'] == 5


def test_singleton_needs_a_backend_with_a_dsn() -> None:
    class Lonely(MicroAgent):
        @periodic(period=1, singleton=True)
        async def tick(self) -> None: ...

    with pytest.raises(ConfigurationError, match='singleton=True needs a bus or broker'):
        Lonely()
    assert Lonely(settings={'lease_dsn': 'memory://'}).schedules[0].lease is not None
    # Lease options reach the lease backend (constructed here, connected only when the schedule starts).
    kafka = Lonely(settings={'lease_dsn': 'kafka://127.0.0.1:9092', 'lease_options': {'session_timeout': 2.0}})
    assert getattr(kafka.schedules[0].lease, 'session_timeout', None) == 2.0


async def test_singleton_tasks_share_the_epoch_grid_and_only_the_holder_runs(loops: TaskSet, uid: str) -> None:
    from microagent.tools.memory import MemoryLease

    clock, runs_a, runs_b = VirtualClock(START + 3.3), [], []
    tasks = [make(clock, recorder(clock, runs), period=10, singleton=True,
                  lease=MemoryLease(f'memory://{uid}', 'T.job', ttl=5, clock=clock.time))
             for runs in (runs_a, runs_b)]
    for task in tasks:
        loops.spawn(task.run())
    await eventually(lambda: any(t.lease is not None and t.lease.held() for t in tasks))
    await clock.advance(100)
    ran = runs_a or runs_b
    assert ran == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]  # multiples of the period since the epoch
    assert not (runs_a and runs_b)
    assert sum(t.stats.not_holder for t in tasks) == 10


# -- whole agents on the test kit's harness ------------------------------------------------

async def test_agent_schedules_across_a_dst_change_on_the_harness() -> None:
    class Clocked(MicroAgent):
        @on('pre_start')
        def setup(self) -> None:
            self.runs: list[str] = []

        @cron('30 2 * * *', timezone='Europe/Berlin')
        async def nightly(self) -> None:
            self.runs.append(f'nightly {self.settings["now"]().isoformat()}')

        @periodic(period=6 * 3600, singleton=True)
        async def sweep(self) -> None:
            self.runs.append(f'sweep {self.settings["now"]().isoformat()}')

    async with Harness(start='2026-03-28T00:00:00+00:00') as h:
        agents = [h.add(Clocked, settings={'now': h.clock.datetime}) for _ in range(2)]
        await h.start()
        await h.advance(2 * 24 * 3600)
    nightly = ['2026-03-28T01:30:00+00:00', '2026-03-29T01:00:00+00:00']  # 02:30 CET, then 03:00 CEST (gap)
    for agent in agents:  # not a singleton: each replica runs it
        assert [r.split()[1] for r in agent.runs if r.startswith('nightly')] == nightly
    sweeps = sorted(r.split()[1] for agent in agents for r in agent.runs if r.startswith('sweep'))
    assert sweeps == [f'2026-03-{d}T{h}:00:00+00:00' for d, h in (
        ('28', '06'), ('28', '12'), ('28', '18'), ('29', '00'), ('29', '06'), ('29', '12'), ('29', '18'),
        ('30', '00'))]  # a singleton on the epoch grid: one replica runs each tick
