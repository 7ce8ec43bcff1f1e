"""Start an agent in an owned task and wait until it consumes: what the launcher's worker and the test kit do."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._tasks import TaskSet
    from .agent import MicroAgent

__all__ = ['start_agent']


async def start_agent(agent: MicroAgent, tasks: TaskSet) -> None:
    """Run ``agent.start()`` in a task of *tasks*; return once its post_start hooks ran, or raise its error.

    ``start()`` itself returns once consuming, or keeps running ``@on('server')``
    sub-services until they end: that task stays in *tasks*.

    Not run: a fragment: ``agent`` is the reader's.
    >>> await start_agent(agent, TaskSet('agents'))   # doctest: +SKIP
    """
    name = type(agent).__name__
    started = asyncio.Event()
    # Appended last, so it fires once the agent's own post_start hooks ran: it is consuming.
    agent.hooks['post_start'].append(started.set)
    runner = tasks.spawn(agent.start(), name=f'run {name}')
    waiter = tasks.spawn(started.wait(), name=f'wait {name}')
    await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if runner.done() and runner.exception() is not None:
        raise runner.exception()  # type: ignore[misc]
