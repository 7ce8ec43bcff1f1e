"""A receiver's lane: its signals run one after another in a task, until one of them has to wait.

Each received signal runs in a task of its own, as far as anyone can tell:
its own copy of the context, isolated from the other signals (an exception or
a wait in one never holds up another), its own timeout. What a lane saves is
the task for every signal whose handler finishes without waiting (counting,
caching, answering from memory: most handlers): those run inline, one after
another, in the lane's task. The first one that suspends keeps that task for
the rest of its run (so ``asyncio.current_task()``, timeouts and cancellation
are its own), and the signals behind it go on at once in a new lane task. A
run that cancels its own task and ends without waiting takes the lane task with
it, so the cancellation never reaches the next signal.

Lane tasks belong to the receiver's :class:`~microagent._tasks.TaskSet`, so
``drain`` waits for the queued signals too, and ``cancel`` drops those not
yet started (as it cancels tasks that had not started).

>>> import asyncio
>>> from microagent._tasks import TaskSet
>>> async def demo():
...     seen, tasks = [], TaskSet('demo')
...     lane = SignalLane(tasks, 'receiver demo')
...     async def handle(n):
...         seen.append(n)
...     for n in range(3):
...         lane.submit(handle(n))
...     await tasks.drain(5)
...     return seen
>>> await demo()
[0, 1, 2]
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import types
from collections import deque
from collections.abc import Coroutine, Generator
from typing import Any

from ._tasks import TaskSet
from ._timeouts import drive

__all__ = ['SignalLane']

log = logging.getLogger('microagent.tasks')

# Inline runs between two yields to the event loop: a long backlog must not starve the loop's other work.
FAIR_SHARE = 64


class SignalLane:
    """Runs submitted coroutines in order in a task of *tasks*, inline until one suspends (module docstring)."""

    __slots__ = ('_backlog', '_name', '_task', '_tasks')

    def __init__(self, tasks: TaskSet, name: str) -> None:
        self._tasks = tasks
        self._name = name
        self._backlog: deque[Coroutine[Any, Any, Any]] = deque()
        self._task: asyncio.Task[None] | None = None  # the task running the backlog, None when idle

    def __len__(self) -> int:
        """Coroutines submitted and not yet started."""
        return len(self._backlog)

    def submit(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run *work* after the ones submitted before it (it starts in this event loop iteration or the next)."""
        self._backlog.append(work)
        if self._task is None:
            self._start()

    def _start(self) -> None:
        self._task = self._tasks.spawn(self._drain(), name=self._name)
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._task is task:  # cancelled before its first step: none of its own cleanup ran
            self._task = None
            self._drop()

    def _drop(self) -> None:
        while self._backlog:  # what had not started never will (as tasks cancelled before they start)
            self._backlog.popleft().close()

    def _hand_on(self) -> None:
        """This task leaves the lane (to a run that waits, or cancelled): the backlog goes on in a new one."""
        self._task = None
        if self._backlog:
            self._start()

    @types.coroutine
    def _drain(self) -> Generator[Any, Any, None]:
        backlog, task = self._backlog, asyncio.current_task()
        mine, ran = True, 0  # mine: this task is the lane's, not yet handed to a suspended coroutine
        try:
            while backlog and task is not None:
                if ran == FAIR_SHARE:
                    ran = 0
                    yield  # as asyncio.sleep(0)
                    continue
                ran += 1
                work, cancels = backlog.popleft(), task.cancelling()
                context = contextvars.copy_context()  # as a task of its own would have
                step = _run_first_step(work, context, self._name)
                if step is not _DONE:  # it waits: it keeps this task; the signals behind go on in a new one
                    mine = False
                    self._hand_on()
                    yield from drive(work, step, context)
                    return
                if task.cancelling() != cancels:
                    # It cancelled its own task and ended: that cancellation is its task's end, not the
                    # next signal's, so this task ends with it (quietly, as the run did).
                    mine = False
                    self._hand_on()
                    with contextlib.suppress(asyncio.CancelledError):
                        yield
                    return
        finally:
            if mine:  # the backlog is done, or this task was cancelled (then the rest is dropped)
                self._task = None
                self._drop()


_DONE = object()  # a first step that finished the run


def _run_first_step(work: Coroutine[Any, Any, Any], context: contextvars.Context, name: str) -> Any:
    """Start *work* in *context*: what it waits for, or ``_DONE`` when it finished (failures logged)."""
    try:
        return context.run(work.send, None)
    except StopIteration:
        return _DONE
    except asyncio.CancelledError:  # it cancelled itself: its task would have ended so, quietly
        return _DONE
    except Exception:
        log.exception('Task %s failed', name)
        return _DONE
