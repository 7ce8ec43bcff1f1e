"""The hooks of a memory hub: where a test kit watches the traffic and injects faults.

A hub without a tap (the default) pays one attribute check per send and per
settlement. :mod:`microagent.testing` installs one with :func:`set_tap`.

>>> class Quiet(Tap):
...     def sent(self, queue, body):
...         return ()              # every message to every queue is dropped
>>> async def quiet_hub():
...     set_tap('memory://x', Quiet())   # the hub of this DSN in the running loop
...     set_tap('memory://x', None)
>>> await quiet_hub()
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from ._hub import hub_for

__all__ = ['Tap', 'Timer', 'set_tap']


class Timer(Protocol):
    """What :meth:`Tap.call_later` returns (an ``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


class Tap:
    """Hooks called by the memory bus and broker of one hub; this base passes everything through."""

    def sent(self, queue: str, body: str) -> Sequence[float]:
        """A message is being sent to *queue*: the delays of the copies to enqueue.

        ``()`` drops it, ``(0.0, 0.0)`` duplicates it; raising fails the send.
        """
        return (0.0,)

    def signalled(self, channel: str, body: str) -> Sequence[float]:
        """A signal (or RPC response) is being published on *channel*: the delays of its deliveries."""
        return (0.0,)

    def settled(self, queue: str, outcome: str, body: str, attempt: int, error: str | None) -> int:
        """A delivery of *queue* was settled (``ack``, ``retry``, ``dead_letter``, ``release``).

        Returns how many extra copies of it come back at once (a lost ack is a redelivery).
        """
        return 0

    def call_later(self, queue: str | None, delay: float, callback: Callable[[], None]) -> Timer:
        """Run *callback* after *delay* seconds: a delayed message of *queue*, or a signal (``None``)."""
        return asyncio.get_running_loop().call_later(delay, callback)


def set_tap(dsn: str, tap: Tap | None) -> None:
    """Install *tap* on the hub of *dsn* in the running event loop (``None`` removes it)."""
    hub_for(dsn).tap = tap
