"""The effects fault run: a chain of agents with exactly-once effects through kills, cuts and a database crash.

A private PostgreSQL (:class:`reliability.pgserver.PostgresServer`) and the backend's rig each sit behind a
fault proxy. ``marun reliability.effects_settings`` runs the chain of :mod:`reliability.effects_agents`
(first stage, relay, second stage; ``replicas`` each) while the producer sends at a steady rate. Phases::

    kill      SIGKILL a random worker (either stage or a relay), `kills` times; the launcher restarts it.
              The relays also SIGKILL themselves right after a publish now and then (REL_RELAY_DIE).
    cut       reset every connection to PostgreSQL at its proxy, then every connection to the broker
    restart   crash PostgreSQL (immediate stop), keep it down a moment, start it again

Then the producer stops and the run waits until every confirmed message has its second-stage effect and
the outbox is empty. Counted from the database: each confirmed message must have exactly one row in
``effect_a`` (its handler's write) and exactly one in ``effect_b`` (the write of the handler of the
message the first handler sent through the outbox, published by a relay).

>>> result = await run_effects('redis', EFFECT_SIZES['smoke'])   # doctest: +SKIP
>>> result['ok']                                                  # doctest: +SKIP
True
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microagent import Catalog, Queue
from microagent._tasks import TaskSet
from microagent.broker import AbstractQueueBroker
from microagent.effects import Tables, migrate
from microagent.exceptions import BackendError

from .effects_memory import MemoryChain
from .group import Group, alive
from .ledger import CONFIRMED, Ledger, read_records
from .pgserver import PostgresServer
from .producer import Producer
from .proxy import FaultProxy
from .rigs import Rig, make_rig

__all__ = ['EFFECT_SIZES', 'EffectSize', 'run_effects']

PREFIX = 'rel_'


@dataclass(frozen=True)
class EffectSize:
    """``rate`` messages per second, ``phase`` seconds of load per phase, ``kills`` SIGKILLs of workers,
    ``relay_die`` the chance a relay kills itself after a publish, ``replicas`` of each agent."""

    name: str
    rate: float
    phase: float
    kills: int
    relay_die: float
    replicas: int
    drain_timeout: float
    pg_down: float


EFFECT_SIZES = {
    'smoke': EffectSize('smoke', rate=30, phase=1.5, kills=3, relay_die=0.005, replicas=2, drain_timeout=120,
                        pg_down=0.5),
    'full': EffectSize('full', rate=60, phase=8.0, kills=24, relay_die=0.002, replicas=2, drain_timeout=240,
                       pg_down=2.0),
}


async def run_effects(backend: str, size: EffectSize) -> dict[str, Any]:
    """Run the chain on *backend* through the faults at *size*; the counted result and its checks."""
    uid = uuid.uuid4().hex[:8]
    ledger_dir = tempfile.mkdtemp(prefix=f'reliability-effects-{backend}-')
    postgres = await asyncio.to_thread(PostgresServer().start)
    rig: Rig | None = None
    run: EffectsRun | None = None
    try:
        pg_proxy = await FaultProxy(postgres.port).start()
        rig = None if backend == 'memory' else await make_rig(backend, uid=uid, durable=False)
        run = EffectsRun(backend, rig, postgres, pg_proxy, size, queue=f'rel_fx_{backend}_{uid}',
                         ledger_dir=ledger_dir)
        try:
            await run.execute()
        finally:
            await run.close()
        result = await run.result()
    finally:
        if rig is not None:
            await rig.close()
        if run is not None:
            await run.pg_proxy.close()
        await asyncio.to_thread(postgres.close)
    if result['ok']:
        shutil.rmtree(ledger_dir, ignore_errors=True)
    else:
        result['ledger_dir'] = ledger_dir
    return result


class GroupWorkers:
    """The chain as ``marun reliability.effects_settings``: a kill is a SIGKILL, the launcher restarts."""

    def __init__(self, env: dict[str, str], replicas: int) -> None:
        self.env, self.replicas = env, replicas
        self.group: Group | None = None

    async def start(self) -> None:
        self.group = await Group.start(self.env, grace=3.0, settings='reliability.effects_settings')
        await self.group.wait_started(3 * self.replicas)

    async def kill_one(self) -> str:
        group = self._group()
        label, pid = random.choice([(k, p) for k, p in group.pids().items() if alive(p)])  # noqa: S311
        starts = group.count(f'{label}: started, pid')
        os.kill(pid, signal.SIGKILL)
        # Back up (a relay may also have killed itself meanwhile: the count is of this label's starts).
        await group.wait_line(rf'{re.escape(label)}: started, pid', count=starts + 1)
        return f'{label} pid {pid}'

    async def stop(self) -> dict[str, Any]:
        group = self._group()
        try:
            return {'stop_seconds': round(await group.stop(timeout=40), 2)}
        except TimeoutError:
            await group.kill()
            return {'stop_seconds': None}

    def _group(self) -> Group:
        if self.group is None:
            raise BackendError('the effects group did not start')
        return self.group

    @property
    def output(self) -> str:
        return self.group.output if self.group is not None else ''


class MemoryWorkers:
    """The chain in this process (:mod:`reliability.effects_memory`): a kill is a stop with no grace."""

    def __init__(self, chain: MemoryChain) -> None:
        self.chain = chain
        self.tasks = TaskSet('memory chain supervisor')

    async def start(self) -> None:
        await self.chain.start()
        self.tasks.spawn(self.chain.supervise(), name='memory chain supervisor')

    async def kill_one(self) -> str:
        label = random.choice(self.chain.labels())  # noqa: S311 - choosing a victim, not crypto
        await self.chain.kill(label)
        return label

    async def stop(self) -> dict[str, Any]:
        await self.tasks.cancel()
        await self.chain.stop()
        return {}

    @property
    def output(self) -> str:
        return self.chain.output


class EffectsRun:
    """One backend's effects run: the servers, the workers, the producer, what was injected."""

    def __init__(self, backend: str, rig: Rig | None, postgres: PostgresServer, pg_proxy: FaultProxy,
                 size: EffectSize, *, queue: str, ledger_dir: str) -> None:
        self.backend, self.rig, self.postgres, self.pg_proxy, self.size, self.queue, self.dir = \
            backend, rig, postgres, pg_proxy, size, queue, ledger_dir
        self.catalog = Catalog()
        Queue(name=queue, catalog=self.catalog)
        self.workers: GroupWorkers | MemoryWorkers
        self.broker: AbstractQueueBroker
        if rig is None:
            chain = MemoryChain(postgres.dsn(pg_proxy.port), queue, ledger_dir, replicas=size.replicas,
                                relay_die=size.relay_die)
            self.broker = chain.broker()
            self.workers = MemoryWorkers(chain)
        else:
            rig.queues.append(queue)
            self.broker = rig.broker(catalog=self.catalog)
            self.workers = GroupWorkers(self.env(), size.replicas)
        self.ledger = Ledger(ledger_dir, 'driver', fsync=False)
        self.producer = Producer(self.broker, queue, self.ledger, rate=size.rate, slow_ms=200)
        self.tasks = TaskSet('effects run')
        self.started = False
        self.outputs: list[str] = []
        self.figures: dict[str, Any] = {'kills': 0, 'pg_cuts': 0, 'broker_cuts': 0, 'pg_restarts': 0}

    def env(self) -> dict[str, str]:
        if self.rig is None:
            raise BackendError('the memory chain runs in this process: no environment for marun')
        return {'REL_BACKEND': self.rig.backend, 'REL_DSN': self.rig.dsn, 'REL_QUEUE': self.queue,
                'REL_LEDGER': self.dir, 'REL_REPLICAS': str(self.size.replicas),
                'REL_BROKER_OPTIONS': json.dumps(self.rig.options), 'REL_PG_DSN': self.postgres.dsn(self.pg_proxy.port),
                'REL_PG_PREFIX': PREFIX, 'REL_RELAY_DIE': str(self.size.relay_die)}

    async def prepare(self) -> None:
        import asyncpg

        connection = await asyncpg.connect(self.postgres.dsn(), timeout=10)
        try:
            await migrate(connection, Tables(PREFIX))
            for table in ('effect_a', 'effect_b'):
                # No unique key on purpose: an effect that happened twice is two rows.
                await connection.execute(f'CREATE TABLE {PREFIX}{table} (mid text NOT NULL, pid int NOT NULL, '
                                         'at timestamptz NOT NULL DEFAULT clock_timestamp())')
        finally:
            await connection.close()

    async def execute(self) -> None:
        await self.prepare()
        self.started = True
        await self.workers.start()
        self.tasks.spawn(self.producer.run(), name='producer')
        await self.pace(self.size.phase)
        await self.fault_kill()
        await self.fault_cut()
        await self.fault_restart()
        await self.pace(self.size.phase)
        self.producer.stop()
        await self.tasks.drain(10)
        await self.drain()

    async def pace(self, seconds: float) -> None:
        """Let the load run for *seconds* (the test's duration, not a synchronisation)."""
        await asyncio.sleep(seconds)

    async def fault_kill(self) -> None:
        for n in range(self.size.kills):
            victim = await self.workers.kill_one()
            self.ledger.fault('kill', victim)
            self.figures['kills'] = n + 1
            await self.pace(2 * self.size.phase / self.size.kills)

    async def fault_cut(self) -> None:
        await self._flowing()  # handlers and relays are at work: there are connections to cut
        self.figures['pg_cuts'] += await self.pg_proxy.reset()
        self.ledger.fault('cut', 'postgres')
        await self.pace(self.size.phase / 2)
        # The memory broker has no connection to cut: only PostgreSQL's.
        self.figures['broker_cuts'] += await self.rig.proxy.reset() if self.rig is not None else 0
        self.ledger.fault('cut', 'broker')
        await self.pace(self.size.phase / 2)

    async def _flowing(self, timeout: float = 60.0) -> None:
        """Wait until a second-stage effect is written after now (the whole chain is moving)."""
        before = await self._latest_effect()
        async with asyncio.timeout(timeout):
            while await self._latest_effect() == before:
                await self.pace(0.2)

    async def _latest_effect(self) -> Any:
        import asyncpg

        connection = await asyncpg.connect(self.postgres.dsn(), timeout=10)
        try:
            return await connection.fetchval(f'SELECT max(at) FROM {PREFIX}effect_b')
        finally:
            await connection.close()

    async def fault_restart(self) -> None:
        await asyncio.to_thread(self.postgres.restart, self.size.pg_down)
        self.figures['pg_restarts'] += 1
        self.ledger.fault('restart', 'postgres')
        await self.pace(self.size.phase)

    async def drain(self) -> None:
        """Wait until every confirmed send has its second effect and the outbox is empty (or the timeout)."""
        deadline = time.monotonic() + self.size.drain_timeout
        began = time.monotonic()
        while time.monotonic() < deadline and not await self._drained():
            await self.pace(0.5)
        self.figures['drain_seconds'] = round(time.monotonic() - began, 1)
        self.figures['drain_complete'] = await self._drained()

    async def _drained(self) -> bool:
        confirmed = self._confirmed()
        try:
            counts = await self._counts()
        except Exception:  # noqa: BLE001 - the database may still be coming back
            return False
        return not counts['outbox_left'] and confirmed <= set(counts['b'])

    def _confirmed(self) -> set[str]:
        return {r['id'] for r in read_records(self.dir) if r['k'] == 'send' and r['status'] == CONFIRMED}

    async def _counts(self) -> dict[str, Any]:
        import asyncpg

        connection = await asyncpg.connect(self.postgres.dsn(), timeout=10)
        try:
            a = Counter({r['mid']: r['n'] for r in await connection.fetch(
                f'SELECT mid, count(*) AS n FROM {PREFIX}effect_a GROUP BY mid')})
            b = Counter({r['mid']: r['n'] for r in await connection.fetch(
                f'SELECT mid, count(*) AS n FROM {PREFIX}effect_b GROUP BY mid')})
            left = await connection.fetchval(f'SELECT count(*) FROM {PREFIX}outbox')
            inbox = await connection.fetchval(f'SELECT count(*) FROM {PREFIX}inbox')
        finally:
            await connection.close()
        return {'a': a, 'b': b, 'outbox_left': int(left), 'inbox_rows': int(inbox)}

    async def close(self) -> None:
        self.producer.stop()
        await self.tasks.drain(10)
        if self.started:
            self.figures.update(await self.workers.stop())
            self.outputs.append(self.workers.output)
        await self.broker.close()
        self.ledger.close()
        for n, text in enumerate(self.outputs):
            Path(self.dir, f'marun-{n}.log').write_text(text)

    async def result(self) -> dict[str, Any]:
        from .effects_verdict import judge_effects

        counts = await self._counts()
        output = '\n'.join(self.outputs)
        if isinstance(self.workers, MemoryWorkers):
            self.figures['relay_deaths'] = self.workers.chain.relay_deaths
        return judge_effects(self.backend, self.size.name, list(read_records(self.dir)), counts,
                             figures=self.figures, output=output,
                             secret=self.rig.secret if self.rig is not None else None)

