"""The in-memory singleton lease: an in-process lock shared per DSN and event loop."""
from __future__ import annotations

import asyncio
import time
import weakref

from ...lease import Lease

__all__ = ['MemoryLease']


class _Lock:
    __slots__ = ('expires', 'owner', 'token')

    def __init__(self) -> None:
        self.owner: object | None = None
        self.expires = 0.0
        self.token = 0


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], _Lock]] = \
    weakref.WeakKeyDictionary()


class MemoryLease(Lease):
    """An in-process lock shared by the leases with the same DSN and name in one event loop.

    Guarantee: exact within the process (no clocks, no network); nothing is
    shared across processes, like the memory bus and broker.

    >>> lease = MemoryLease('memory://doc', 'Agent.job', ttl=1)
    >>> await lease.start(); lease.held()
    True
    >>> await lease.stop()
    """

    def _lock(self) -> _Lock:
        locks = _LOCKS.setdefault(asyncio.get_running_loop(), {})
        return locks.setdefault((self.dsn, self.name), _Lock())

    async def _attempt(self) -> bool:
        lock, now = self._lock(), time.monotonic()
        if lock.owner is not self and lock.owner is not None and lock.expires > now:
            return False
        if lock.owner is not self:
            lock.token += 1
            self.token = lock.token
        lock.owner, lock.expires = self, now + self.ttl
        return True

    async def _release(self, was_held: bool) -> None:
        lock = self._lock()
        if lock.owner is self:
            lock.owner, lock.expires = None, 0.0
