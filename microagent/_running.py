"""The agents running in each event loop: a started agent stays alive until it is stopped.

asyncio keeps only weak references to tasks. A task blocked on a socket read
is reachable only through its stream, which the transport's protocol holds
weakly too, so an agent started with
``asyncio.create_task(Agent(bus=RedisSignalBus(dsn)).start())`` and nobody
else holding it would be garbage collected with its bus reader ("Task was
destroyed but it is pending!") and stop answering. ``MicroAgent.start()``
therefore registers the agent here, keyed by its event loop (the entry goes
when the loop goes), and ``stop()`` (or a failed start) takes it out. An
agent holds its bus and broker, which hold their tasks: all stay alive.

This is the only process-level registry of agents; it is keyed by loop like
the memory and AMQP hubs, and :func:`running` lets a program (or a test) find
the agents it did not keep.

>>> async def main():
...     return running()
>>> asyncio.run(main())
()
"""
from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .agent import MicroAgent

__all__ = ['keep', 'release', 'running']

# Per loop, the agents by id(): an agent class may define __eq__ without __hash__.
_RUNNING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, MicroAgent]] = weakref.WeakKeyDictionary()


def keep(agent: MicroAgent) -> None:
    """Hold *agent* (strongly) for as long as the running loop lives or until :func:`release`."""
    _RUNNING.setdefault(asyncio.get_running_loop(), {})[id(agent)] = agent


def release(agent: MicroAgent) -> None:
    """Forget *agent* in every loop (a stopped agent may be collected once nobody else holds it)."""
    for agents in list(_RUNNING.values()):
        if agents.get(id(agent)) is agent:
            del agents[id(agent)]


def running(loop: asyncio.AbstractEventLoop | None = None) -> tuple[MicroAgent, ...]:
    """The agents started and not yet stopped in *loop* (default: the running one)."""
    return tuple(_RUNNING.get(loop or asyncio.get_running_loop(), {}).values())
