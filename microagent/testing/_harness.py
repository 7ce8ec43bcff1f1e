"""The harness: agents on a private memory hub, a virtual clock, a journal and fault injection.

::

    async with Harness(start='2026-01-05T08:00:00+01:00') as h:
        h.add(EmailAgent)
        await h.start()
        await h.broker.mailer.send({'user_id': 1, 'address': 'a@b.c', 'template': 'hi'})
        await h.settle()
        assert h.acked('mailer') == [{'user_id': 1, 'address': 'a@b.c', 'template': 'hi'}]
        await h.advance(7 * 24 * 3600)      # a week of schedules, in order, in milliseconds
"""
from __future__ import annotations

import asyncio
import functools
import uuid
from typing import Any

from .._starting import start_agent
from .._tasks import TaskSet
from ..agent import MicroAgent
from ..catalog import Catalog
from ..exceptions import ConfigurationError
from ..tools.memory import MemoryBroker, MemorySignalBus, set_tap
from ._clock import Moment, VirtualClock
from ._faults import Faults
from ._journal import Journal, Record
from ._tap import HarnessTap

__all__ = ['Harness']

SPIN_ROUNDS = 50      # loop turns polled back to back before settle starts to nap
QUIET_ROUNDS = 3      # idle this many turns in a row: nothing else is coming


class Harness:
    """Run agents for a test: memory backend, virtual clock, recorded traffic, injected faults.

    *start*: the virtual time to begin at (epoch seconds, aware datetime or ISO
    string; default now). *catalog*: where the agents' declarations live
    (default: the default catalog). Other keyword arguments go to every
    :class:`~microagent.tools.memory.MemoryBroker` (``max_attempts``,
    ``retry_delay``...). Retries and injected delays wait on the virtual
    clock: ``await h.advance(seconds)`` lets them come.
    """

    def __init__(self, *, start: Moment | None = None, clock: VirtualClock | None = None,
                 catalog: Catalog | None = None, settle_timeout: float = 10.0, **broker_options: Any) -> None:
        self.clock = clock or VirtualClock(start)
        self.clock.settle = self.settle
        self.dsn = f'memory://harness-{uuid.uuid4().hex[:12]}'
        self.catalog = catalog
        self.settle_timeout = settle_timeout
        self.journal = Journal(self.clock.time)
        self.faults = Faults()
        self.broker_options = broker_options
        self.bus = MemorySignalBus(self.dsn, catalog=catalog)
        self.broker = MemoryBroker(self.dsn, catalog=catalog, **broker_options)
        self.agents: list[MicroAgent] = []
        self._tap = HarnessTap(self.journal, self.faults, self.clock)
        self._starts = TaskSet('harness agents')
        self._entered = False

    def __repr__(self) -> str:
        return f'<Harness {self.dsn} agents={len(self.agents)} at {self.clock.datetime().isoformat()}>'

    async def __aenter__(self) -> Harness:
        set_tap(self.dsn, self._tap)
        self._entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        await self.bus.close()
        await self.broker.close()
        await self._starts.cancel()
        set_tap(self.dsn, None)
        self._entered = False

    # -- agents ---------------------------------------------------------------------

    def add(self, agent: type[MicroAgent] | MicroAgent, *, settings: dict[str, Any] | None = None) -> Any:
        """Build (from a class) or adopt (an instance on this harness's ``dsn``) an agent; it is returned.

        Its schedules run on the virtual clock and its consumers obey the crash faults.
        """
        if isinstance(agent, type):
            agent = agent(bus=MemorySignalBus(self.dsn, catalog=self.catalog),
                          broker=MemoryBroker(self.dsn, catalog=self.catalog, **self.broker_options),
                          settings=settings)
        elif settings is not None:
            raise ConfigurationError('Harness.add: settings= only with an agent class')
        for backend in (agent.bus, agent.broker):
            if backend is not None and getattr(backend, 'dsn', None) != self.dsn:
                raise ConfigurationError(f'Harness.add: {type(agent).__name__} must use the harness dsn {self.dsn}')
        for task in agent.schedules:
            task.clock = self.clock.time
            task.sleep = functools.partial(self.clock.sleep, background=True)
            if task.lease is not None:
                task.lease.clock = self.clock.time
        for consumer in agent.consumers:
            consumer.handler = self.faults.wrap(consumer.queue.name, consumer.handler)
        self.agents.append(agent)
        return agent

    async def start(self) -> None:
        """Start every added agent not started yet; returns once each is consuming (post_start ran)."""
        if not self._entered:
            raise ConfigurationError('Harness.start: use the harness as "async with Harness() as h"')
        for agent in self.agents:
            if not agent.started:
                await start_agent(agent, self._starts)
        await self.settle()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop every started agent (drain, pre_stop hooks, close)."""
        await asyncio.gather(*(a.stop(timeout) for a in self.agents if a.started))

    # -- time -----------------------------------------------------------------------

    async def advance(self, seconds: float) -> None:
        """Advance the virtual clock: every schedule run, retry and delayed message due fires, in order."""
        await self.clock.advance(seconds)

    async def advance_to(self, moment: Moment) -> None:
        """Advance the virtual clock to *moment*."""
        await self.clock.advance_to(moment)

    async def settle(self, timeout: float | None = None) -> None:
        """Wait until nothing can happen without the clock moving.

        Idle means: no message waits for a consumer with a free slot, no signal
        is in transit, and every running handler, receiver and schedule run is
        asleep on the virtual clock. Raises ``TimeoutError`` naming what is
        still busy after *timeout* (default ``settle_timeout``) real seconds.
        """
        loop = asyncio.get_running_loop()
        limit = self.settle_timeout if timeout is None else timeout
        deadline, rounds, quiet = loop.time() + limit, 0, 0
        while quiet < QUIET_ROUNDS:
            rounds += 1
            # Back to back at first; then nap: a handler may be waiting on real time (a timeout).
            await asyncio.sleep(0 if rounds < SPIN_ROUNDS else 0.001)
            busy = await self.busy()
            quiet = 0 if busy else quiet + 1
            if busy and loop.time() > deadline:
                raise TimeoutError(f'harness still busy after {limit}s: {busy}')

    async def busy(self) -> str:
        """What is still running or waiting to run (empty when idle)."""
        tap, found = self._tap, []
        if tap.in_transit:
            found.append(f'{tap.in_transit} signal(s) or message(s) in transit')
        work = 0
        for agent in self.agents:
            if not agent.started:
                continue
            for consumer in agent.consumers:
                name = consumer.queue.name
                runner = agent.broker.runner(name)
                work += runner.inflight
                ready = await agent.broker.queue_length(name) - tap.delayed[name]
                if ready > 0 and runner.free_slots > 0:
                    found.append(f'{ready} message(s) waiting in {name}')
            work += sum(len(ts) for ts in {id(r.tasks): r.tasks for r in agent.receivers}.values())
            work += sum(len(task.runs) for task in agent.schedules)
        if work > self.clock.waiting():
            found.append(f'{work} handler(s) running')
        return ', '.join(found)

    # -- what happened --------------------------------------------------------------

    def sent(self, queue: str) -> list[Any]:
        """Messages sent to *queue*, in order (before faults); see :class:`Journal`."""
        return self.journal.sent(queue)

    def acked(self, queue: str) -> list[Any]:
        """Messages of *queue* handled and acknowledged, in order."""
        return self.journal.acked(queue)

    def retried(self, queue: str) -> list[Record]:
        """Failed attempts of *queue* sent back for a retry."""
        return self.journal.retried(queue)

    def dead_lettered(self, queue: str) -> list[Record]:
        """Messages of *queue* moved to its dead-letter queue."""
        return self.journal.dead_lettered(queue)

    def released(self, queue: str) -> list[Record]:
        """Deliveries of *queue* given back unhandled (an injected crash, a stop)."""
        return self.journal.released(queue)

    def signals(self, name: str) -> list[dict[str, Any]]:
        """Arguments of each *name* signal sent."""
        return self.journal.signals(name)
