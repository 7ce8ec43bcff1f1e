"""Who closes a bus or broker: the ownership rule shared by both.

A bus or broker is often shared: several agents in one process, a test that
also sends through it, a web handler. The rule:

* An agent's ``stop()`` closes its bus and broker only when nothing else still
  uses them (:attr:`Shared.in_use` is False): no other agent has receivers or
  consumers bound, and no ``async with`` block holds them.
* ``async with broker:`` holds the backend for the block (nested and
  concurrent blocks count); leaving the last one closes it unless an agent
  still has handlers bound to it, in which case that agent's ``stop()`` does.

A closed bus or broker reconnects lazily when used again, so a wrong guess
costs a reconnect, never a lost message.
"""
from __future__ import annotations

from typing import Any, Self

__all__ = ['Shared']


class Shared:
    """Reference counting of ``async with`` holders, plus the backend's own bound handlers.

    >>> from microagent.tools.memory import MemoryBroker
    >>> async with MemoryBroker('memory://') as broker:
    ...     broker.in_use
    True
    >>> broker.in_use
    False
    """

    _holds = 0  # a class default: subclasses need no __init__ call for it

    @property
    def in_use(self) -> bool:
        """Whether an ``async with`` block holds this backend or handlers are bound to it."""
        return self._holds > 0 or self.has_handlers()

    def has_handlers(self) -> bool:
        """Whether receivers or consumers of some agent are bound here (backends override)."""
        return False

    async def close(self) -> None:
        """Close the connections (the backend classes implement it)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._holds += 1
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._holds -= 1
        if not self.in_use:
            await self.close()
