"""The effects fault run on the memory backend: the same chain, in one process (the memory hub does not cross
processes, so a SIGKILL would take the queues with it).

Each "worker" is an agent (or a relay) with a broker and a PostgresEffects (a pool) of its own. A kill is
the closest thing in one process: the worker is stopped with no grace (its handlers and its relay pass
are cancelled mid-flight: their connections are closed and their backends ended, so PostgreSQL rolls
their transactions back; unsettled messages go back to the queue) and a fresh one takes its place. A
relay may also "die" right after a publish (its task cancelled before it deletes the row). Cuts and the
PostgreSQL crash are the real thing, at the same proxy and on the same private server as the other backends.

>>> chain = MemoryChain(dsn, queue, ledger_dir, replicas=2, relay_die=0.005)   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import uuid
from typing import Any

from microagent import Catalog, MicroAgent, Queue, consumer
from microagent.effects import PostgresEffects, Relay
from microagent.tools.memory import MemoryBroker

from .ledger import Ledger

__all__ = ['MemoryChain']

PREFIX = 'rel_'


class RelayDied(BaseException):
    """The in-process stand-in for a SIGKILL of a relay: no ``except Exception`` stops it, so the pass ends
    with its rows published and not deleted, and the relay's task ends (the chain starts another)."""


class _RelayBroker(MemoryBroker):
    """A memory broker whose relay may die right after a publish."""

    chance = 0.0

    async def send(self, name: str, message: str, **kwargs: Any) -> None:
        await super().send(name, message, **kwargs)
        if self.chance and random.random() < self.chance:  # noqa: S311 - a fault, not crypto
            raise RelayDied(name)


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class MemoryChain:
    """The chain of reliability/effects_agents.py on one memory hub, with workers that can be killed."""

    def __init__(self, pg_dsn: str, queue: str, ledger_dir: str, *, replicas: int, relay_die: float) -> None:
        self.pg_dsn = pg_dsn
        self.hub = f'memory://rel-fx-{uuid.uuid4().hex[:8]}'
        self.catalog = Catalog()
        self.queue = Queue(queue, catalog=self.catalog)
        self.queue_out = Queue(f'{queue}_out', catalog=self.catalog)
        self.ledger = Ledger(ledger_dir, 'memory-chain', fsync=False)
        self.replicas = replicas
        self.relay_die = relay_die
        self.workers: dict[str, Any] = {}
        self.relay_deaths = 0
        self.lines: list[str] = []
        self._log = _Lines(self.lines)

    def broker(self) -> MemoryBroker:
        """The producer's broker (on the chain's hub)."""
        return MemoryBroker(self.hub, catalog=self.catalog, retry_delay=0.05, max_retry_delay=0.5)

    def _effects(self) -> PostgresEffects:
        return PostgresEffects(self.pg_dsn, prefix=PREFIX, relay=False, max_size=4, statement_timeout=5.0,
                               connect_timeout=5.0)

    def _stage(self, stage: str, effects: PostgresEffects) -> MicroAgent:
        ledger, source = self.ledger, self.queue if stage == 'a' else self.queue_out
        out = self.queue_out.name

        class Stage(MicroAgent):
            @consumer(source, timeout=30, effects=effects, max_attempts=60)
            async def handle(self, tx: Any, mid: str, mode: str = 'ok', ms: int = 0, **_: Any) -> None:
                ledger.write({'k': f'run_{stage}', 'id': mid, 'pid': os.getpid()})
                if mode == 'slow':
                    await asyncio.sleep(ms / 1000)  # the work itself
                await tx.execute(f'INSERT INTO {PREFIX}effect_{stage} (mid, pid) VALUES ($1, $2)', mid, 0)
                if stage == 'a':
                    await getattr(tx.broker, out).send({'mid': mid})
        return Stage(broker=MemoryBroker(self.hub, catalog=self.catalog, retry_delay=0.05, max_retry_delay=0.5))

    async def start_worker(self, label: str) -> None:
        effects = self._effects()
        if label.startswith('relay'):
            broker = _RelayBroker(self.hub, catalog=self.catalog)
            broker.chance = self.relay_die
            relay = Relay(effects, broker, poll_interval=0.5, publish_timeout=5.0, max_backoff=1.0)
            await relay.start()
            self.workers[label] = (relay, effects)
        else:
            agent = self._stage(label[0], effects)
            await agent.start()
            self.workers[label] = (agent, effects)
        self.lines.append(f'{label}: started')

    async def start(self) -> None:
        # The effects' own log lines ("... was handled before ...") are counted like a group's output.
        logging.getLogger('microagent.effects').addHandler(self._log)
        logging.getLogger('microagent.effects').setLevel(logging.INFO)
        for n in range(self.replicas):
            for kind in ('a', 'b', 'relay'):
                await self.start_worker(f'{kind}#{n}')

    def labels(self) -> list[str]:
        return list(self.workers)

    async def kill(self, label: str) -> None:
        """Stop *label* with no grace (in-flight work cancelled) and start a fresh one in its place."""
        await self._stop_worker(label, grace=0)
        self.lines.append(f'{label}: exited with -9')
        await self.start_worker(label)

    async def supervise(self) -> None:
        """Restart relays whose task died after a publish (what the launcher does for a killed process)."""
        while True:
            for label, (worker, _) in list(self.workers.items()):
                if isinstance(worker, Relay) and not worker.running:
                    self.relay_deaths += 1
                    await self.kill(label)
            await asyncio.sleep(0.2)  # polling our own relays' state: nothing to await on

    async def stop(self) -> None:
        for label in list(self.workers):
            await self._stop_worker(label, grace=5)
        logging.getLogger('microagent.effects').removeHandler(self._log)
        self.ledger.close()

    async def _stop_worker(self, label: str, grace: float) -> None:
        worker, effects = self.workers.pop(label)
        if isinstance(worker, Relay):
            await worker.stop()
        else:
            await worker.stop(timeout=grace)
        await effects.close()

    @property
    def output(self) -> str:
        return '\n'.join(self.lines)
