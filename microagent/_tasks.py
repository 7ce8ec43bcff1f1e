"""Owned background tasks: every task the library starts lives in a TaskSet."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ['TaskSet']

log = logging.getLogger('microagent.tasks')


class TaskSet:
    """A tracked set of tasks that can be drained with a deadline.

    >>> import asyncio
    >>> tasks = TaskSet('consumer mailer')
    >>> _ = tasks.spawn(asyncio.sleep(0)); await tasks.drain(timeout=5)   # how many were cut at the deadline
    0
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Start *coro* as a task owned by this set; its errors are logged, not lost."""
        task = asyncio.get_running_loop().create_task(coro, name=name or self.name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error('Task %s failed', task.get_name(), exc_info=task.exception())

    async def drain(self, timeout: float | None) -> int:
        """Wait for running tasks until *timeout*, then cancel the rest; how many were cancelled.

        Tasks the running ones start meanwhile (a receiver's lane going on in a new task) are waited for too.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pending = set(self._tasks)
        while pending and (deadline is None or deadline > loop.time()):
            _, pending = await asyncio.wait(pending, timeout=None if deadline is None else deadline - loop.time())
            pending |= {task for task in self._tasks if not task.done()}
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        return len(pending)

    async def cancel(self) -> None:
        """Cancel every task and wait until they are gone."""
        await self.drain(0)


async def cancel_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel *task* and wait for it, swallowing its cancellation."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
