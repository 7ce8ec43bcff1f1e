"""Fault injection for the memory backend: lose, repeat, delay or fail sends; lose acks; crash handlers.

Every rule names its target (``queue=`` or ``signal=``) and which events it
hits: the *nth* one counted from when the rule was added, and *times* in a
row from there (``times=None``: every one from the nth on).

>>> faults = Faults()
>>> faults.drop(queue='mailer', nth=2)
>>> [faults.on_send('queue', 'mailer') for _ in range(3)]
[(0.0,), (), (0.0,)]
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..exceptions import ConfigurationError, DeliveryError

__all__ = ['Faults', 'HandlerCrashed']

H = TypeVar('H', bound=Callable[..., Awaitable[Any]])
CRASH_POINTS = ('before', 'during', 'after')


class HandlerCrashed(asyncio.CancelledError):
    """An injected crash: the handler's process "died", so its message is given back unacknowledged."""


@dataclass
class _Rule:
    action: str
    kind: str
    name: str
    nth: int
    times: int | None
    seconds: float = 0.0
    at: str = 'during'
    seen: int = 0

    def hit(self) -> bool:
        self.seen += 1
        return self.seen >= self.nth and (self.times is None or self.seen < self.nth + self.times)


class Faults:
    """The fault rules of one harness; the memory hub's tap and the consumers' handlers consult them."""

    def __init__(self) -> None:
        self.rules: list[_Rule] = []

    def drop(self, queue: str | None = None, signal: str | None = None, *, nth: int = 1,
             times: int | None = 1) -> None:
        """Lose sends: the message or signal never arrives (the sender sees success)."""
        self._add('drop', queue, signal, nth, times)

    def duplicate(self, queue: str | None = None, signal: str | None = None, *, nth: int = 1,
                  times: int | None = 1) -> None:
        """Deliver sends twice."""
        self._add('duplicate', queue, signal, nth, times)

    def delay(self, queue: str | None = None, signal: str | None = None, *, seconds: float, nth: int = 1,
              times: int | None = 1) -> None:
        """Deliver sends *seconds* later (on the harness's virtual clock)."""
        if seconds < 0:
            raise ConfigurationError(f'delay: seconds must be >= 0, got {seconds!r}')
        self._add('delay', queue, signal, nth, times, seconds=seconds)

    def fail_send(self, queue: str | None = None, signal: str | None = None, *, nth: int = 1,
                  times: int | None = 1) -> None:
        """Make sends raise :class:`~microagent.DeliveryError` (nothing is delivered)."""
        self._add('fail', queue, signal, nth, times)

    def redeliver(self, queue: str, *, nth: int = 1, times: int | None = 1) -> None:
        """Lose acks of *queue*: a handled message is delivered once more (handlers must be idempotent)."""
        self._add('redeliver', queue, None, nth, times)

    def crash(self, queue: str, *, nth: int = 1, times: int | None = 1, at: str = 'during') -> None:
        """Crash the consumer of *queue* mid-flight: its message comes back unacknowledged.

        *at*: ``before`` the handler runs, ``during`` it (at its first
        ``await``), or ``after`` it returned but before the ack.
        """
        if at not in CRASH_POINTS:
            raise ConfigurationError(f'crash: at must be one of {CRASH_POINTS}, got {at!r}')
        self._add('crash', queue, None, nth, times, at=at)

    def clear(self) -> None:
        """Remove every rule."""
        self.rules.clear()

    # -- consulted by the tap and the handlers --------------------------------------

    def on_send(self, kind: str, name: str) -> tuple[float, ...]:
        """The delays of the copies a send to *name* becomes; raises for an injected failure."""
        copies: tuple[float, ...] = (0.0,)
        failed = False
        for rule in self._hits(('drop', 'duplicate', 'delay', 'fail'), kind, name):
            if rule.action == 'fail':
                failed = True
            elif rule.action == 'drop':
                copies = ()
            elif rule.action == 'duplicate':
                copies = copies * 2
            else:
                copies = tuple(d + rule.seconds for d in copies)
        if failed:
            raise DeliveryError(f'injected fault: send to {kind} {name!r} failed')
        return copies

    def on_ack(self, queue: str) -> int:
        """How many times an acknowledged message of *queue* comes back."""
        return len(self._hits(('redeliver',), 'queue', queue))

    def wrap(self, queue: str, handler: H) -> H:
        """*handler* with the crash rules of *queue* applied (the signature is kept)."""
        @functools.wraps(handler)
        async def handle(*args: Any, **kwargs: Any) -> Any:
            hits = self._hits(('crash',), 'queue', queue)
            if not hits:
                return await handler(*args, **kwargs)
            return await _crash(handler, args, kwargs, hits[0].at, queue)
        return handle  # type: ignore[return-value]

    def _hits(self, actions: tuple[str, ...], kind: str, name: str) -> list[_Rule]:
        # Every matching rule counts the event, whether or not it fires on it.
        return [r for r in self.rules if r.action in actions and r.kind == kind and r.name == name and r.hit()]

    def _add(self, action: str, queue: str | None, signal: str | None, nth: int, times: int | None,
             **extra: Any) -> None:
        if (queue is None) == (signal is None):
            raise ConfigurationError(f'{action}: name exactly one of queue= and signal=')
        if nth < 1 or (times is not None and times < 1):
            raise ConfigurationError(f'{action}: nth and times must be >= 1, got {nth!r} and {times!r}')
        kind, name = ('queue', queue) if queue is not None else ('signal', signal)
        self.rules.append(_Rule(action, kind, str(name), nth, times, **extra))


async def _crash(handler: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any],
                 at: str, queue: str) -> Any:
    crashed = HandlerCrashed(f'injected crash of the consumer of {queue!r} ({at} its handler)')
    if at == 'before':
        raise crashed
    task = asyncio.current_task()
    # Fires at the handler's first suspension point: the crash lands mid-flight.
    killer = asyncio.get_running_loop().call_soon(task.cancel) if at == 'during' and task else None
    try:
        await handler(*args, **kwargs)
    except asyncio.CancelledError:
        if killer is None or task is None or not task.cancelling():
            raise
        task.uncancel()  # ours, not a stop: turned into the crash below
    finally:
        if killer is not None:
            killer.cancel()
    raise crashed
