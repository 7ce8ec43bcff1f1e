"""A timeout armed only when the coroutine it guards suspends: what each receiver and RPC send runs under.

``await within(coro, seconds)`` is ``async with asyncio.timeout(seconds):
await coro`` (TimeoutError when *coro* still runs *seconds* after the start,
the same cancellation rules), but a coroutine that finishes without suspending
(most signal handlers: they count, store in memory, answer) never creates a
timer: on a hot path that saves the ``Timeout`` object, a timer handle and the
event loop's heap work, which cost about as much as the handler itself.

>>> import asyncio
>>> async def answer(): return 42
>>> async def late(): await asyncio.sleep(1)
>>> async def demo():
...     value = await within(answer(), 0.05)
...     try:
...         await within(late(), 0.05)
...     except TimeoutError:
...         return value, 'timed out'
>>> await demo()
(42, 'timed out')
"""
from __future__ import annotations

import asyncio
import contextvars
import time
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

__all__ = ['drive', 'within']

T = TypeVar('T')


class _Expiry:
    """The timer of one suspended run: cancels its task once, and remembers it did."""

    __slots__ = ('expired', 'task')

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.expired = False

    def __call__(self) -> None:
        self.expired = True
        self.task.cancel()


@types.coroutine
def within(coro: Coroutine[Any, Any, T], seconds: float) -> Generator[Any, Any, T]:
    """Await *coro*; TimeoutError if it has not finished *seconds* after this call (see the module docstring)."""
    started = time.monotonic()  # not the loop's clock: asking for the loop costs more than most handlers
    try:
        step = coro.send(None)
    except StopIteration as done:
        first: T = done.value
        return first
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds - (time.monotonic() - started)
    task = asyncio.current_task()
    if task is None:  # as asyncio.timeout: the timer cancels the task
        coro.close()
        raise RuntimeError('within() must run inside a task')
    cancelling = task.cancelling()
    expiry = _Expiry(task)
    timer = loop.call_at(deadline, expiry)
    try:
        value = yield from drive(coro, step)
    except asyncio.CancelledError as exc:
        if expiry.expired and task.uncancel() <= cancelling:
            raise TimeoutError from exc
        raise
    finally:
        timer.cancel()
    if expiry.expired:  # it swallowed the cancellation: as asyncio.timeout, take ours back
        task.uncancel()
    return value


def drive(coro: Coroutine[Any, Any, T], step: Any,
          context: contextvars.Context | None = None) -> Generator[Any, Any, T]:
    """Go on running *coro* (in *context*), which suspended with *step*: what ``await`` does after a first step.

    ``yield from drive(...)`` in a generator-based coroutine: the task running it
    waits for what *coro* waits for, and throws its cancellation into *coro*.
    """
    run: Callable[..., Any] = _direct if context is None else context.run
    while True:
        try:
            sent = yield step
        except GeneratorExit:
            run(coro.close)
            raise
        except BaseException as exc:  # noqa: BLE001 - every exception the task throws in goes to coro
            try:
                step = run(coro.throw, exc)
            except StopIteration as done:
                value: T = done.value
                return value
        else:
            try:
                step = run(coro.send, sent)
            except StopIteration as done:
                value = done.value
                return value


def _direct(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)
