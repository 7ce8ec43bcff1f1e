"""One backend through the faults: real agent processes under ``marun``, steady load, then drain and count.

Phases, in this order, while the producer keeps sending (each is skipped
unless named in *faults*)::

    kill       SIGKILL a random worker, several times; the launcher restarts it
    cut        reset every connection at the proxy, then the backend's own cut
               (Redis CLIENT KILL, rabbitmqctl close_all_user_connections)
    blackhole  the proxy swallows all traffic for a while, then lets it flow
    stop       SIGSTOP a worker past its lease, then SIGCONT
    restart    kill the broker and start it again (durable storage)
    killer     a message whose handler SIGKILLs its own process (once)
    crasher    a message whose handler SIGKILLs every process that handles it:
               dead-lettered after max_attempts, each crash counted as an attempt
    poison     always-failing, oversized and deeply nested messages
    singleton  SIGKILL the holder of a singleton job's lease, several times
               (a second group, three replicas of reliability.singleton.TickAgent,
               started with the first one and running through every fault before)
    term       SIGTERM the group with slow messages in flight and prefetched

Then a fresh group drains what is left and the ledger is counted.

>>> result = await run_backend('redis', FAULTS, SIZES['smoke'])   # doctest: +SKIP
>>> result['counts']['lost']                                       # doctest: +SKIP
0
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microagent import Catalog, Queue
from microagent._tasks import TaskSet
from microagent.exceptions import BackendError

from .group import Group, alive
from .ledger import Ledger, count, read_records
from .producer import Producer
from .rigs import Rig, make_rig
from .singleton import KILL_FAULT, read_ticks
from .verdict import dead_ids, judge

__all__ = ['FAULTS', 'SIZES', 'Size', 'run_backend']

TICKERS = 3  # replicas of the singleton job (issue 9, item 7)

FAULTS = ('kill', 'cut', 'blackhole', 'stop', 'restart', 'killer', 'crasher', 'poison', 'singleton', 'term')


@dataclass(frozen=True)
class Size:
    """How long and how hard: ``phase`` seconds of load per fault, ``rate`` messages per second.

    The kill phase lasts three phases (``kills`` SIGKILLs spread over it). The singleton phase kills the
    lease holder ``holder_kills`` times, ticks ``tick_period`` seconds apart.
    """

    name: str
    rate: float
    phase: float
    kills: int
    poison: int
    replicas: int
    grace: float
    slow_ms: int
    drain_timeout: float
    holder_kills: int = 2
    tick_period: float = 1.0


SIZES = {
    'smoke': Size('smoke', rate=40, phase=1.5, kills=2, poison=2, replicas=2, grace=2.0, slow_ms=300,
                  drain_timeout=30),
    'full': Size('full', rate=100, phase=20.0, kills=40, poison=10, replicas=3, grace=5.0, slow_ms=500,
                 drain_timeout=180, holder_kills=6),
}


async def run_backend(backend: str, faults: tuple[str, ...], size: Size, *, rabbit_restart: bool = False,
                      kafka_durable: bool = False, ledger_dir: str | None = None,
                      options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run *backend* through *faults* at *size*; the counted result and its checks.

    Broker restarts need storage that survives them: RabbitMQ's is shared (``rabbit_restart`` allows
    it), Kafka's is tansu on S3 (``kafka_durable``, a local moto server); otherwise the fault is skipped.
    *options* go to every broker of the run (e.g. ``{'fast_lane': False}``: AMQP on plain aiormq).
    """
    uid = uuid.uuid4().hex[:8]
    rig = await make_rig(backend, uid=uid, durable=kafka_durable and 'restart' in faults,
                         rabbit_restart=rabbit_restart, options=options)
    run = Run(rig, size, f'rel_{backend}_{uid}', ledger_dir or tempfile.mkdtemp(prefix=f'reliability-{backend}-'))
    try:
        await run.execute(faults)
    finally:
        try:
            await run.close()
        finally:
            await rig.close()  # our brokers and users go away whatever happened to the run
    result = run.result(faults)
    if result['ok'] and ledger_dir is None:
        shutil.rmtree(run.dir, ignore_errors=True)  # a passed run leaves nothing behind; a failed one its ledger
    else:
        result['ledger_dir'] = run.dir
    return result


class Run:
    """The state of one backend's run: the rig, the group, the producer, what was injected."""

    def __init__(self, rig: Rig, size: Size, queue: str, ledger_dir: str) -> None:
        self.rig, self.size, self.queue, self.dir = rig, size, queue, ledger_dir
        rig.queues.append(queue)
        self.catalog = Catalog()
        Queue(name=queue, catalog=self.catalog)
        self.broker = rig.broker(catalog=self.catalog)
        self.ledger = Ledger(ledger_dir, 'driver', fsync=False)
        self.producer = Producer(self.broker, queue, self.ledger, rate=size.rate, slow_ms=size.slow_ms)
        self.tasks = TaskSet('reliability run')
        self.group: Group | None = None
        self.ticker: Group | None = None
        self.outputs: list[str] = []
        self.notes: list[str] = []
        self.figures: dict[str, Any] = {'drain_seconds': None, 'skipped': []}
        self.dead: list[dict[str, Any]] = []

    def env(self) -> dict[str, str]:
        return {'REL_BACKEND': self.rig.kind, 'REL_DSN': self.rig.dsn, 'REL_QUEUE': self.queue,
                'REL_LEDGER': self.dir, 'REL_REPLICAS': str(self.size.replicas),
                'REL_BROKER_OPTIONS': json.dumps(self.rig.options)}

    async def start_group(self) -> Group:
        self.group = await Group.start(self.env(), grace=self.size.grace, log_level='DEBUG')
        await self.group.wait_started(self.size.replicas)
        return self.group

    async def start_ticker(self) -> Group:
        """The singleton group (fault 7): three replicas of a job that runs one tick at a time."""
        lease = {'session_timeout': self.rig.options['session_timeout']} if self.rig.kind == 'kafka' else {}
        env = {**self.env(), 'REL_TICK_PERIOD': str(self.size.tick_period), 'REL_TICK_REPLICAS': str(TICKERS),
               'REL_LEASE_OPTIONS': json.dumps(lease)}
        self.ticker = await Group.start(env, grace=self.size.grace, log_level='DEBUG',
                                        settings='reliability.singleton_settings')
        await self.ticker.wait_started(TICKERS)
        return self.ticker

    async def execute(self, faults: tuple[str, ...]) -> None:
        # The singleton group starts with the consumers (their start-ups overlap) and lives through the faults
        # before its own: cuts and restarts must not make a tick run twice either.
        starts = [self.start_group(), *([self.start_ticker()] if 'singleton' in faults else [])]
        # Both finish (started or failed) before going on: close() then finds and kills whatever started.
        started = await asyncio.gather(*starts, return_exceptions=True)
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        group = self.group
        if group is None:
            raise BackendError('the consumer group did not start')
        await self._wait_handling(1)
        self.tasks.spawn(self.producer.run(), name='producer')
        for fault in FAULTS[:-1]:
            if fault in faults:
                await self._inject(fault, group)
        await self.pace(self.size.phase)
        self.producer.stop()
        if 'term' in faults:
            await self._inject('term', group)
        await self.drain()

    async def _inject(self, fault: str, group: Group) -> None:
        try:
            await getattr(self, f'fault_{fault}')(group)
        except (TimeoutError, BackendError) as exc:
            # Reported as a failed check (the awaited consequence never came); the run goes on to count.
            self.figures.setdefault('fault_errors', []).append(f'{fault}: {type(exc).__name__}')

    async def pace(self, seconds: float) -> None:
        """Let the load run for *seconds* (the test's duration, not a synchronisation)."""
        await asyncio.sleep(seconds)

    def _worker_pids(self, group: Group) -> list[int]:
        return [pid for pid in group.pids().values() if alive(pid)]

    async def fault_kill(self, group: Group) -> None:
        for n in range(self.size.kills):
            pid = random.choice(self._worker_pids(group))  # noqa: S311 - choosing a victim, not crypto
            os.kill(pid, signal.SIGKILL)
            self.ledger.fault('kill', f'pid {pid}')
            await group.wait_line(r'exited with -9', count=n + 1)
            await group.wait_started(self.size.replicas + n + 1)
            await self.pace(3 * self.size.phase / self.size.kills)

    async def fault_cut(self, group: Group) -> None:
        cut = await self.rig.proxy.reset()
        self.ledger.fault('cut', f'proxy reset {cut} connections')
        await self.pace(self.size.phase / 2)
        await self.rig.cut_natively()
        self.ledger.fault('cut', 'native')
        await self.pace(self.size.phase / 2)

    async def fault_blackhole(self, group: Group) -> None:
        began = time.time()
        self.rig.proxy.blackhole(True)
        await self.pace(min(3.0, self.size.phase))
        self.rig.proxy.blackhole(False)
        await self.rig.proxy.reset()  # what a route coming back after a long outage leaves: dead sockets
        self.ledger.fault('blackhole', 'healed', start=began)
        await self.pace(self.size.phase)

    async def fault_stop(self, group: Group) -> None:
        pid = random.choice(self._worker_pids(group))  # noqa: S311 - choosing a victim, not crypto
        lease = self.rig.lease
        os.kill(pid, signal.SIGSTOP)
        stopped = (lease or 2.0) + 1.5
        await self.pace(stopped)
        os.kill(pid, signal.SIGCONT)
        self.ledger.fault('stop', f'pid {pid} stopped {stopped:.1f}s', recovery=False)
        if lease is None:
            self.notes.append(f'{self.rig.backend}: no lease on a stopped consumer: its messages waited for it')
        await self.pace(self.size.phase)

    async def fault_restart(self, group: Group) -> None:
        if not self.rig.can_restart:
            self.figures['skipped'].append('restart')
            return
        await self.rig.restart()
        self.ledger.fault('restart', 'broker back')
        await self.pace(self.size.phase)

    async def fault_killer(self, group: Group) -> None:
        exits = group.count('exited with')
        await self.producer.send({'mid': 'killer-0', 'mode': 'kill-once'})
        await group.wait_line(r'exited with -9', count=exits + 1)
        self.figures['killer_exits'] = group.count('exited with') - exits
        await self.pace(self.size.phase)

    async def fault_crasher(self, group: Group) -> None:
        exits = group.count('exited with')
        attempts = int(self.rig.options['max_attempts'])
        await self.producer.send({'mid': 'crasher-0', 'mode': 'kill-always'})
        await group.wait_line(r'exited with -9', count=exits + attempts)
        for n in range(attempts):  # each death is a disruption: what its process held may be handled again
            self.ledger.fault('crasher', f'death {n + 1}', recovery=False)
        # The worker that gets it next dead-letters it unhandled (the count is spent): no further exit.
        await self.pace(self.size.phase)
        self.figures['crasher_exits'] = group.count('exited with') - exits

    async def fault_poison(self, group: Group) -> None:
        # The rate is measured against poison only: a group still recovering from the previous fault (on Kafka,
        # a rebalance after the killer's death) would be counted against it.
        await self._handling_since(time.time(), timeout=30.0)
        exits = group.count('exited with')
        began = time.time()
        for n in range(self.size.poison):
            await self.producer.send({'mid': f'poison-{n}', 'mode': 'poison'})
        await self.producer.send({'mid': 'oversized-0', 'mode': 'ok', 'pad': 'x' * 100_000})
        await self.producer.send_raw('nested-0', '{"mid": "nested-0", "deep": ' + '[' * 100_000 + ']' * 100_000
                                     + '}', mode='nested')
        await self.pace(max(self.size.phase, 3.0))
        self.figures['poison_window'] = (began, time.time())
        self.figures['poison_exits'] = group.count('exited with') - exits

    async def fault_singleton(self, group: Group) -> None:
        ticker = self.ticker
        if ticker is None:
            raise BackendError('the singleton group did not start')
        for n in range(self.size.holder_kills):
            holder = await self._next_tick(after=time.time())
            # At a random point of the period: just before a tick is the takeover's worst case, just after its best.
            await self.pace(random.uniform(0, self.size.tick_period))  # noqa: S311 - a moment, not crypto
            os.kill(holder, signal.SIGKILL)
            self.ledger.fault(KILL_FAULT, f'holder pid {holder}', recovery=False, pid=holder)
            killed = time.time()
            await ticker.wait_line(r'exited with -9', count=n + 1)
            await self._next_tick(after=killed, exclude=holder)  # taken over: the next kill needs a new holder
        self.figures['ticker_stop_seconds'] = round(await ticker.stop(timeout=self.size.grace + 30), 3)
        self.outputs.append(ticker.output)
        self.ticker = None

    async def _next_tick(self, *, after: float, exclude: int | None = None, timeout: float = 60.0) -> int:
        """The pid of the first replica to run a tick after *after* (not *exclude*, the killed one)."""
        async with asyncio.timeout(timeout):
            while True:
                found = [t['pid'] for t in read_ticks(self.dir) if t['t'] > after and t['pid'] != exclude]
                if found:
                    return int(found[0])
                await self.pace(0.1)

    async def fault_term(self, group: Group) -> None:
        # Slow messages: some in flight when the signal comes, more prefetched behind them.
        for n in range(self.size.replicas * 12):
            await self.producer.send({'mid': f'term-{n}', 'mode': 'slow', 'ms': int(self.size.grace * 400)})
        await self._wait_begun('term-', 1)
        self.figures['drain_seconds'] = round(await group.stop(timeout=self.size.grace + 30), 3)
        self.ledger.fault('term', 'group stopped', recovery=False)
        self.outputs.append(group.output)
        self.group = None

    async def drain(self) -> None:
        """A fresh group (if needed) handles what is left; wait until every confirmed send was handled."""
        group = self.group or await self.start_group()
        deadline = time.monotonic() + self.size.drain_timeout
        while time.monotonic() < deadline and not await self._drained():
            await self.pace(0.5)
        self.figures['drain_complete'] = await self._drained()
        metrics = await group.metrics()
        self.figures['metrics_checked'] = bool(metrics)
        self.outputs.append(metrics)
        self.figures['drain_stop_seconds'] = round(await group.stop(timeout=self.size.grace + 30), 3)
        self.outputs.append(group.output)
        self.group = None

    async def _drained(self) -> bool:
        self.dead = await _dead_letters(self.broker, self.queue)
        return not count(read_records(self.dir), dead_ids(self.dead)).lost

    async def _handling_since(self, since: float, timeout: float) -> None:
        """Wait until an ordinary message begun after *since* was handled (the group is consuming again)."""
        await self._until(lambda rs: any(r['k'] == 'end' and r['id'].startswith('m') and r['start'] > since
                                         for r in rs), timeout)

    async def _wait_handling(self, n: int) -> None:
        self.ledger.fault('warmup', '', recovery=False)
        await self.producer.send({'mid': 'warmup-0', 'mode': 'ok'})
        await self._wait_begun('warmup-0', n)

    async def _wait_begun(self, prefix: str, n: int, timeout: float = 60.0) -> None:
        await self._until(lambda rs: sum(1 for r in rs if r['k'] == 'begin' and r['id'].startswith(prefix)) >= n,
                          timeout)

    async def _until(self, done: Callable[[Iterator[dict[str, Any]]], bool], timeout: float) -> None:
        """Poll the ledger until *done* says so; TimeoutError after *timeout*."""
        async with asyncio.timeout(timeout):
            while not done(read_records(self.dir)):
                await self.pace(0.1)

    async def close(self) -> None:
        self.producer.stop()
        await self.tasks.drain(10)
        for running in (self.group, self.ticker):
            if running is not None:
                self.outputs.append(running.output)
                await running.kill()
        if not self.dead:
            self.dead = await _dead_letters(self.broker, self.queue)
        await self._audit_losses()
        await self.broker.close()
        self.ledger.close()
        for n, text in enumerate(self.outputs):
            Path(self.dir, f'marun-{n}.log').write_text(text)

    async def _audit_losses(self) -> None:
        lost = count(read_records(self.dir), dead_ids(self.dead)).lost
        if not lost or self.rig.kind != 'kafka':
            return
        from .audit import kafka_unhandled
        try:
            where = await kafka_unhandled(self.rig.dsn.removeprefix('kafka://'), self.queue, self.queue, set(lost))
        except Exception as exc:  # noqa: BLE001 - a diagnostic: its failure is reported, never fatal
            self.notes.append(f'kafka log audit failed: {type(exc).__name__}')
            return
        # Owed messages sit at or after the committed offset: not lost, but never handled in this run.
        self.figures['kafka_owed'] = where['owed']
        self.notes.append(f"kafka log audit of {len(lost)} unhandled: {len(where['passed'])} before the group's "
                          f"committed offset (lost: committed past), {len(where['owed'])} at or after it (owed: "
                          f"no member consumed them), {len(where['missing'])} not in the log (not stored)")

    def result(self, faults: tuple[str, ...]) -> dict[str, Any]:
        return judge(self.rig, faults, self.size, list(read_records(self.dir)), figures=self.figures,
                     dead=self.dead, outputs=self.outputs, notes=self.notes)



async def _dead_letters(broker: Any, queue: str) -> list[dict[str, Any]]:
    try:
        async with asyncio.timeout(30):
            letters = await broker.dead_letters(queue, limit=1000)
    except Exception as exc:  # noqa: BLE001 - reported, the checks then fail on missing dead letters
        return [{'error': type(exc).__name__}]
    return [{'body': d.body[:200], 'size': len(d.body), 'error': d.error[:200], 'attempts': d.attempts}
            for d in letters]
