"""The caller's side of RPC over the bus: where responses wait for the call or waiter that asked.

A bus keeps, per request in flight, an inbox by correlation id; the bus's
response channel puts each response there (``put_nowait``). ``call`` waits for
the first only (:class:`First`: a future, no queue); ``waiter`` iterates over
all of them until its deadline (:func:`until` over an ``asyncio.Queue``).
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .telemetry import Telemetry

__all__ = ['First', 'Inbox', 'until']


class First:
    """The inbox of a ``call``: its first response resolves a future, the later ones are ignored.

    >>> import asyncio
    >>> async def demo():
    ...     inbox = First(asyncio.get_running_loop().create_future())
    ...     inbox.put_nowait({'c': '1', 'r': {'A.b': 1}}); inbox.put_nowait({'c': '1', 'r': {'C.d': 2}})
    ...     return await inbox.future
    >>> await demo()
    {'c': '1', 'r': {'A.b': 1}}
    """

    __slots__ = ('future',)

    def __init__(self, future: asyncio.Future[dict[str, Any] | None]) -> None:
        self.future = future

    def put_nowait(self, response: dict[str, Any]) -> None:
        if not self.future.done():
            self.future.set_result(response)

    @staticmethod
    def expire(future: asyncio.Future[dict[str, Any] | None]) -> None:
        """The call's deadline: no response (None) unless one came."""
        if not future.done():
            future.set_result(None)


class Inbox(Protocol):
    """Where the responses to one request go: an ``asyncio.Queue`` (waiter) or a :class:`First` (call)."""

    def put_nowait(self, response: dict[str, Any]) -> None: ...


async def until(inbox: asyncio.Queue[dict[str, Any]], deadline: float, telemetry: Telemetry | None,
                span: Any) -> AsyncIterator[dict[str, Any]]:
    """The results of the responses put in *inbox* until the loop's clock passes *deadline*."""
    loop = asyncio.get_running_loop()
    while (left := deadline - loop.time()) > 0:
        try:
            response = await asyncio.wait_for(inbox.get(), left)
        except TimeoutError:
            return
        if telemetry is not None and span is not None:
            telemetry.responded(span, response.get('h'))
        yield response['r']
