"""A started agent lives until it is stopped, whoever holds a reference to it (every backend)."""
from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from microagent import Catalog, MicroAgent, Queue, Signal, consumer, receiver
from microagent._running import running

from ..backends import BackendSpec
from ..helpers import Collector, eventually


def _start_unheld(backend: BackendSpec, catalog: Catalog, uid: str, signal: Signal, queue: Queue,
                  seen: Collector) -> list[weakref.ref[MicroAgent]]:
    """Start a bus-only and a broker-only agent the way a user may: create_task, no reference kept."""
    class Listener(MicroAgent):
        @receiver(signal)
        async def handle(self, n: int, **kwargs: Any) -> int:
            seen.add(('signal', n))
            return n + 1

    class Worker(MicroAgent):
        @consumer(queue)
        async def work(self, n: int) -> None:
            seen.add(('message', n))

    agents: list[MicroAgent] = []
    if backend.make_bus is not None:
        agents.append(Listener(bus=backend.make_bus(catalog, f'T{uid}')))
    if backend.make_broker is not None:
        agents.append(Worker(broker=backend.make_broker(catalog)))
    for agent in agents:
        asyncio.create_task(agent.start())  # noqa: RUF006 - the point: nobody keeps the task or the agent
    return [weakref.ref(agent) for agent in agents]


async def test_started_agent_survives_garbage_collection(harness, backend, catalog, uid):
    signal = Signal(f'lifetime_{uid}', ['n'], catalog=catalog)
    queue = Queue(f'lifetime_work_{uid}', catalog=catalog)
    seen = Collector()
    refs = _start_unheld(backend, catalog, uid, signal, queue, seen)
    try:
        await eventually(lambda: all((a := ref()) is not None and a.started for ref in refs), harness.wait(10))
        gc.collect()
        await asyncio.sleep(0)  # the collected tasks' finalizers run (and, before the fix, closed the bus)
        gc.collect()
        assert all(ref() is not None for ref in refs), 'a started agent was garbage collected'
        if backend.make_bus is not None:
            bus = harness.bus()
            await getattr(bus, signal.name).send('tester', n=1)
            await seen.wait(1, harness.wait(10))
            assert await getattr(bus, signal.name).call('tester', n=2, timeout=harness.wait(10)) == \
                {'Listener.handle': 3}
        await getattr(harness.broker(), queue.name).send({'n': 4})
        items = await seen.wait(3 if backend.make_bus is not None else 1, harness.wait(15))
        assert ('message', 4) in items
    finally:
        for agent in [ref() for ref in refs]:
            if agent is not None:
                await agent.stop(timeout=1)
    assert not [ref() for ref in refs if ref() in running()], 'a stopped agent is still registered'
