"""Singleton leases: at most one replica of an agent runs each tick of a ``singleton=True`` schedule.

A :class:`Lease` is kept by a background keeper that tries to take or renew
it every ``ttl / 3`` seconds. A replica runs a tick only if, at that moment,
it holds the lease *locally*: its last successful renewal started less than
``ttl`` ago (minus a safety margin), and the tick is due after the moment it
took the lease. Another replica can only take the lease after the server
side of it lapsed, which is later than the old holder's local deadline, and
it then only runs ticks due after that: so no tick runs twice, and after a
holder dies the next one takes over within ``ttl`` plus one renewal interval.

Backends (chosen by the DSN scheme of the agent's broker or bus, see
:func:`lease_for`):

* ``memory://``: ``MemoryLease``, an in-process lock shared per DSN and
  event loop (like the memory hubs): exact, one process only
  (``microagent.tools.memory._lease``).
* ``redis://``: ``SET NX PX`` with a fencing token, renewed by a compare-and-
  expire script; each tick is also claimed on the server, so a tick runs at
  most once even if clocks misbehave (``microagent.tools.redis._lease``).
* ``amqp://``: a single-active-consumer queue (``microagent.tools.amqp._lease``).
* ``kafka://``: group membership of a one-partition topic
  (``microagent.tools.kafka._lease``).

>>> lease = lease_for('memory://doc', 'Agent.report', ttl=5)   # redis://..., amqp://... alike
>>> await lease.start()
>>> lease.held(time.time())
True
>>> await lease.stop()
"""
from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ._dsn import mask_dsn, mask_text, password_of
from ._tasks import TaskSet
from .backends import lease_class
from .exceptions import ConfigurationError

__all__ = ['Lease', 'lease_for']

log = logging.getLogger('microagent.lease')


class Lease(abc.ABC):
    """A named lease held by at most one replica at a time; backends implement :meth:`_attempt`.

    ``ttl`` is the lease time to live in seconds. ``settle`` is how long a
    fresh holder waits before acting (for backends that cannot tell exactly
    when the previous holder's claim ended). ``token`` is the fencing token of
    the current holding (grows with every new holder, where the backend has one).

    >>> from microagent.tools.memory import MemoryLease
    >>> lease = MemoryLease('memory://doc', 'Agent.job', ttl=1)
    >>> await lease.start(); lease.held()
    True
    >>> await lease.stop()
    """

    settle: float = 0.0

    def __init__(self, dsn: str, name: str, ttl: float, *, clock: Callable[[], float] = time.time) -> None:
        if ttl <= 0:
            raise ConfigurationError(f'lease {name!r}: ttl must be > 0, got {ttl!r}')
        self.dsn = dsn
        self.name = name
        self.ttl = float(ttl)
        self.clock = clock
        self.token: int | None = None
        self._valid_until = 0.0         # monotonic deadline of the local claim
        self._since: float | None = None  # wall time from which this holder may act
        self._keeper = TaskSet(f'lease {name}')
        self._first: asyncio.Event | None = None
        self._token_seen: int | None = None
        self._failing = False  # log a failing backend once, not every round

    def __repr__(self) -> str:
        return f'<{type(self).__name__} {self.name} {mask_dsn(self.dsn)}>'

    @property
    def renew_interval(self) -> float:
        """Seconds between two acquire/renew attempts."""
        return self.ttl / 3

    def held(self, tick: float | None = None) -> bool:
        """Whether this replica holds the lease now (and, given *tick*, took it before that tick was due)."""
        if self._since is None or time.monotonic() >= self._valid_until:
            return False
        return tick is None or tick > self._since

    async def claim(self, tick: float) -> bool:
        """Whether this replica may run *tick*; backends may check with the server too."""
        return self.held(tick)

    async def start(self) -> None:
        """Start the keeper and wait (at most one ttl) for its first attempt."""
        self._first = asyncio.Event()
        self._keeper.spawn(self._keep(), name=f'lease keeper {self.name}')
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), self.ttl)

    async def stop(self) -> None:
        """Stop renewing and give the lease up, so another replica takes over at once."""
        await self._keeper.cancel()
        was_held = self._since is not None
        self._lost()
        try:
            await asyncio.wait_for(self._release(was_held), max(self.ttl, 1.0))
        except Exception as exc:  # noqa: BLE001 - any client error: the lease lapses by itself
            log.warning('lease %s: release failed: %s', self.name, self.masked(exc))
        await self._close()

    async def _keep(self) -> None:
        while True:
            started = time.monotonic()
            await self._round()
            if self._first is not None:
                self._first.set()
            await asyncio.sleep(max(0.0, started + self.renew_interval - time.monotonic()))

    async def _round(self) -> None:
        try:
            # Connecting may take longer than a renewal (a group join): it has its own bound.
            await asyncio.wait_for(self._connect(), max(self.ttl, 10.0))
            # The claim is counted from before the request: the server's ttl starts later.
            sent = time.monotonic()
            holding = await asyncio.wait_for(self._attempt(), self.renew_interval)
        except Exception as exc:  # noqa: BLE001 - the keeper must outlive any client error
            # The local claim lapses on its own at _valid_until: nothing to undo here.
            log.log(logging.DEBUG if self._failing else logging.WARNING, 'lease %s: attempt failed: %s',
                    self.name, self.masked(exc))
            self._failing = True
            return
        if self._failing:
            log.info('lease %s: backend reachable again', self.name)
        self._failing = False
        if not holding:
            self._lost()
            return
        if self._since is None or self.token != self._token_seen:
            self._token_seen = self.token
            self._since = self.clock() + self.settle
            log.info('lease %s: taken (token %s)', self.name, self.token)
        self._valid_until = sent + self.ttl * 0.9

    def _lost(self) -> None:
        if self._since is not None:
            log.info('lease %s: lost', self.name)
        self._since = None
        self._valid_until = 0.0

    def masked(self, exc: BaseException) -> str:
        """*exc* as text without the DSN's password."""
        return mask_text(f'{type(exc).__name__}: {exc}', password_of(self.dsn))

    @abc.abstractmethod
    async def _attempt(self) -> bool:
        """Take or renew the lease once; True if this replica holds it now."""

    async def _connect(self) -> None:  # noqa: B027 - optional for backends
        """Open the lease's own connections if they are not open (called before each attempt)."""

    async def _release(self, was_held: bool) -> None:  # noqa: B027 - optional for backends
        """Give the lease up (called on stop)."""

    async def _close(self) -> None:  # noqa: B027 - optional for backends
        """Close the lease's own connections."""


def lease_for(dsn: str, name: str, ttl: float, **options: Any) -> Lease:
    """The lease for *name* on the backend serving *dsn* (its own connections, made lazily).

    The backend is found through the same scheme table as buses and brokers
    (:data:`microagent.backends.SCHEMES`).

    >>> lease_for('memory://', 'Agent.job', ttl=2)
    <MemoryLease Agent.job memory://>
    """
    return lease_class(dsn)(dsn, name, ttl, **options)
