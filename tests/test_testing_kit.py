"""microagent.testing: the virtual clock, the harness's journal and every injected fault, on real agents."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from microagent import (
    Catalog,
    ConfigurationError,
    DeliveryError,
    MicroAgent,
    Queue,
    Signal,
    consumer,
    cron,
    on,
    receiver,
)
from microagent.testing import Harness, VirtualClock

from .test_doctests import run_examples

START = '2027-01-15T08:00:00+00:00'


@pytest.fixture
def decl(catalog: Catalog) -> dict[str, Any]:
    return {'jobs': Queue(name='jobs', catalog=catalog), 'done': Queue(name='done', catalog=catalog),
            'ping': Signal(name='ping', providing_args={'n': 'integer'}, catalog=catalog)}


def agents(decl: dict[str, Any]) -> tuple[type[MicroAgent], type[MicroAgent]]:
    class Worker(MicroAgent):
        @on('pre_start')
        def setup(self) -> None:
            self.seen: list[Any] = []
            self.failing = dict(self.settings.get('fail', {}))  # n -> how many runs fail

        @consumer(decl['jobs'], timeout=5)
        async def work(self, n: int) -> None:
            self.seen.append(n)
            await asyncio.sleep(0)  # a suspension point: "mid-flight"
            if self.failing.get(n):
                self.failing[n] -= 1
                raise RuntimeError(f'job {n} failed')
            await self.broker.done.send({'n': n})

    class Listener(MicroAgent):
        @on('pre_start')
        def setup(self) -> None:
            self.pings: list[int] = []
            self.ticks: list[str] = []

        @receiver(decl['ping'])
        async def on_ping(self, signal: Any, sender: str, n: int) -> int:
            self.pings.append(n)
            return n * 2

        @cron('*/15 * * * *', timeout=5)
        async def quarter(self) -> None:
            self.ticks.append(self.clock_now())

        def clock_now(self) -> str:
            return str(self.settings['clock']().isoformat())

    return Worker, Listener


async def test_virtual_clock_fires_in_order_without_waiting() -> None:
    clock, fired = VirtualClock(0), []
    clock.call_later(30, lambda: fired.append(('b', clock.now)))
    clock.call_later(10, lambda: fired.append(('a', clock.now)))
    cancelled = clock.call_later(20, lambda: fired.append(('x', clock.now)))
    cancelled.cancel()
    await clock.advance(25)
    assert fired == [('a', 10.0)] and clock.now == 25
    await clock.advance_to('1970-01-01T00:01:00+00:00')
    assert fired == [('a', 10.0), ('b', 30.0)] and clock.now == 60
    with pytest.raises(ConfigurationError, match='time zone'):
        VirtualClock('2027-01-01T00:00:00')
    with pytest.raises(ConfigurationError, match='>= 0'):
        await clock.advance(-1)


async def test_handled_retried_and_dead_lettered_are_recorded(catalog: Catalog, decl: dict[str, Any]) -> None:
    worker_cls, _ = agents(decl)
    async with Harness(start=START, catalog=catalog, retry_delay=10, max_attempts=2) as h:
        worker = h.add(worker_cls, settings={'fail': {1: 2, 2: 1, 3: 1}})
        await h.start()
        for n in (1, 2, 3):
            await h.broker.jobs.send({'n': n})
        await h.settle()
        assert h.sent('jobs') == [{'n': 1}, {'n': 2}, {'n': 3}]
        assert [r.message for r in h.retried('jobs')] == [{'n': 1}, {'n': 2}, {'n': 3}]
        assert h.acked('jobs') == []  # the retries wait on the virtual clock
        await h.advance(60)
        assert sorted(m['n'] for m in h.acked('jobs')) == [2, 3]
        dead = h.dead_lettered('jobs')
        assert [(r.message, r.attempt, r.error) for r in dead] == [({'n': 1}, 2, 'RuntimeError: job 1 failed')]
        assert sorted(m['n'] for m in h.sent('done')) == [2, 3]
        assert sorted(worker.seen) == [1, 1, 2, 2, 3, 3]
        assert (await h.broker.dead_letters('jobs'))[0].attempts == 2


async def test_signals_rpc_and_cron_on_the_virtual_clock(catalog: Catalog, decl: dict[str, Any]) -> None:
    _, listener_cls = agents(decl)
    async with Harness(start=START, catalog=catalog) as h:
        listener = h.add(listener_cls, settings={'clock': h.clock.datetime})
        await h.start()
        await h.bus.ping.send('test', n=1)
        assert await h.bus.ping.call('test', n=2, timeout=5) == {'Listener.on_ping': 4}
        assert h.signals('ping') == [{'n': 1}, {'n': 2}]
        await h.advance(3600)
        assert listener.pings == [1, 2]
        assert [t[11:16] for t in listener.ticks] == ['08:15', '08:30', '08:45', '09:00']


async def test_injected_send_faults(catalog: Catalog, decl: dict[str, Any]) -> None:
    worker_cls, listener_cls = agents(decl)
    async with Harness(start=START, catalog=catalog) as h:
        worker = h.add(worker_cls)
        listener = h.add(listener_cls, settings={'clock': h.clock.datetime})
        await h.start()
        h.faults.drop(queue='jobs', nth=2)
        h.faults.duplicate(queue='jobs', nth=3)
        h.faults.delay(queue='jobs', nth=4, seconds=30)
        h.faults.fail_send(queue='jobs', nth=5)
        for n in range(1, 5):
            await h.broker.jobs.send({'n': n})
        with pytest.raises(DeliveryError, match="injected fault: send to queue 'jobs' failed"):
            await h.broker.jobs.send({'n': 5})
        await h.broker.jobs.send({'n': 6})
        await h.settle()
        assert worker.seen == [1, 3, 3, 6]
        await h.advance(30)
        assert worker.seen == [1, 3, 3, 6, 4]
        assert [r.kind for r in h.journal.records if r.name == 'jobs' and r.kind != 'ack'] == [
            'sent', 'sent', 'dropped', 'sent', 'sent', 'send_failed', 'sent']
        h.faults.drop(signal='ping', times=None)
        await h.bus.ping.send('test', n=7)
        await h.settle()
        assert listener.pings == [] and h.signals('ping') == [{'n': 7}]


async def test_lost_ack_and_crashes_redeliver(catalog: Catalog, decl: dict[str, Any]) -> None:
    worker_cls, _ = agents(decl)
    async with Harness(start=START, catalog=catalog) as h:
        worker = h.add(worker_cls)
        await h.start()
        h.faults.redeliver('jobs')
        h.faults.crash('jobs', nth=2, at='during')
        h.faults.crash('jobs', nth=3, at='after')
        await h.broker.jobs.send({'n': 1})
        await h.settle()
        # 1st run acked but the ack is lost; 2nd crashes mid-flight, 3rd after the work, 4th acked.
        assert worker.seen == [1, 1, 1, 1]
        assert [r.kind for r in h.journal.records if r.name == 'jobs'] == ['sent', 'ack', 'release', 'release', 'ack']
        assert h.sent('done') == [{'n': 1}, {'n': 1}, {'n': 1}]  # 'during' crashed before sending
        assert h.dead_lettered('jobs') == [] and h.retried('jobs') == []
        h.faults.crash('jobs', at='before')
        await h.broker.jobs.send({'n': 2})
        await h.settle()
        assert worker.seen[-1:] == [2] and len(h.released('jobs')) == 3


async def test_fault_rules_are_checked(catalog: Catalog) -> None:
    h = Harness(catalog=catalog)
    with pytest.raises(ConfigurationError, match='exactly one of queue= and signal='):
        h.faults.drop()
    with pytest.raises(ConfigurationError, match='nth and times must be >= 1'):
        h.faults.duplicate(queue='x', nth=0)
    with pytest.raises(ConfigurationError, match='at must be one of'):
        h.faults.crash('x', at='later')
    with pytest.raises(ConfigurationError, match='async with'):
        await h.start()


def test_docstring_examples_run() -> None:
    from microagent import _starting
    from microagent.launcher import snapshot, statuspage
    from microagent.testing import _clock, _faults, _harness, _journal
    from microagent.tools.memory import _tap

    for module in (_clock, _faults, _harness, _journal, _tap, _starting, snapshot, statuspage):
        assert run_examples(module).failed == 0, module.__name__  # top-level await allowed
