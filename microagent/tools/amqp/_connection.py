"""A robust AMQP connection shared by the broker and the bus (aiormq underneath).

Constructing one opens nothing and needs no event loop. The first caller of
:meth:`RobustConnection.get` starts a supervisor task that connects, and after
any loss reconnects forever with capped exponential backoff. Callers wait for
the connection up to their own timeout and then get a :class:`BackendError`
with the DSN masked; nobody hangs.

A DSN may name several hosts of one cluster (``amqp://u:p@h1:5672,h2:5673/``,
or a list of DSNs, see ``amqp._hosts``): each connect tries the next host
after the one that failed or was lost, and a round of them all that fails is
followed by the backoff. Logs name the host (password masked).

Channels are not restored here: each user (the publish channel, every
consumer) notices its channel closed and opens a new one on the next
connection, re-declaring what it needs. This keeps the recovery logic next to
the state it restores.

Every connection runs over a :class:`~._lane.Lane`, the hot path for
publishes, confirms, deliveries and acks, unless ``fast_lane=False`` or the
installed aiormq is not the one the lane was written for (``amqp._compat``:
then one warning, and plain aiormq). :meth:`RobustConnection.channel` opens a
channel and returns it with its connection's lane, or None: its users then
go through aiormq's own channel API.

    conn = RobustConnection('amqp://guest:guest@localhost/', log=log)
    channel, lane = await conn.channel(timeout=10, publisher_confirms=True)
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import weakref
from collections.abc import Sequence

import aiormq
import aiormq.abc

from ..._backoff import Backoff
from ..._connect import connect_error
from ..._dsn import mask_dsn, mask_text, password_of, scheme_of
from ..._tasks import TaskSet
from ...exceptions import BackendError, ConfigurationError, ConnectError
from ._compat import lane_problem, report
from ._hosts import dsn_of, hosts_of
from ._lane import Lane, LaneTransport

__all__ = ['CONNECTION_ERRORS', 'RobustConnection', 'close_channel', 'wait_closed']

# What a lost or refused connection raises from aiormq calls: retried, never fatal.
CONNECTION_ERRORS = (
    aiormq.AMQPError, aiormq.ChannelInvalidStateError, ConnectionError, OSError, RuntimeError,
)


class RobustConnection:
    """One AMQP connection, reopened after every loss; see the module docstring.

    ``fast_lane=False`` never uses the lane (plain aiormq), whatever aiormq is installed.

    Not run: needs a RabbitMQ server.
    >>> conn = RobustConnection('amqp://guest:guest@localhost/')  # doctest: +SKIP
    >>> channel = await (await conn.get(timeout=5)).channel()      # doctest: +SKIP
    """

    def __init__(self, dsn: str | Sequence[str], *, log: logging.Logger | None = None,
                 ssl_context: ssl.SSLContext | None = None, connect_timeout: float = 10.0, reconnect_delay: float = 0.1,
                 max_reconnect_delay: float = 2.0, fast_lane: bool = True, owner: str = 'AMQP') -> None:
        dsn = dsn_of(dsn)
        if scheme_of(dsn) not in ('amqp', 'amqps'):
            raise ConfigurationError(f'AMQP needs an amqp:// or amqps:// DSN, got {mask_dsn(dsn)!r}')
        self.hosts = hosts_of(dsn)
        if connect_timeout <= 0 or reconnect_delay <= 0 or max_reconnect_delay < reconnect_delay:
            raise ConfigurationError('connect_timeout and reconnect_delay must be > 0, '
                                     'max_reconnect_delay >= reconnect_delay')
        self._dsn = dsn
        self._secret = password_of(dsn)
        self.log = log or logging.getLogger('microagent.amqp')
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.fast_lane = fast_lane
        self.owner = owner  # who connects, named in a ConnectError
        self.last_error = ''
        self.connects = 0
        # Why the very first connect cannot succeed (a refused login, an unknown host, nothing listening).
        self.failure: ConnectError | None = None
        self._last_exc: BaseException | None = None
        self._host = 0  # the index in hosts of the next (or current) connect
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._lanes: weakref.WeakKeyDictionary[aiormq.abc.AbstractConnection, Lane] = weakref.WeakKeyDictionary()
        self._ready: asyncio.Event | None = None
        self._tasks = TaskSet('amqp connection')

    def __repr__(self) -> str:
        state = 'open' if self.is_open else 'closed'
        return f'<RobustConnection {mask_dsn(self._dsn)} {state}>'

    @property
    def host(self) -> str:
        """The host DSN (masked) of the open connection, or of the next connect while there is none."""
        return mask_dsn(self.hosts[self._host])

    @property
    def is_open(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    def mask(self, text: str) -> str:
        """*text* with this DSN's password masked (for logs and errors)."""
        return mask_text(text, self._secret)

    async def get(self, timeout: float | None) -> aiormq.abc.AbstractConnection:
        """The open connection, waiting for it up to *timeout* (None: forever); BackendError after.

        Before the first connection ever made, a refused login, an unknown host or nothing
        listening raise a :class:`ConnectError` at once.
        """
        connection = self._connection
        if connection is not None and not connection.is_closed:
            return connection
        ready = self._start()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await ready.wait()
                    connection = self._connection
                    if connection is not None and not connection.is_closed:
                        return connection
                    if self.failure is not None:
                        raise self.failure
                    ready.clear()
        except TimeoutError:
            reason = f': {self.last_error}' if self.last_error else ''
            raise BackendError(f'{mask_dsn(self._dsn)}: not connected within {timeout}s{reason}') from None

    async def channel(self, timeout: float | None, *, publisher_confirms: bool = False
                      ) -> tuple[aiormq.abc.AbstractChannel, Lane | None]:
        """A new channel on the open connection (waiting up to *timeout* for one), and its lane (None: plain)."""
        connection = await self.get(timeout)
        channel = await connection.channel(publisher_confirms=publisher_confirms, timeout=timeout)
        return channel, self._lanes.get(connection)

    async def close(self) -> None:
        """Stop reconnecting and close the connection; :meth:`get` opens it again later."""
        await self._tasks.cancel()
        connection, self._connection = self._connection, None
        self._ready = None
        if connection is not None:
            with contextlib.suppress(*CONNECTION_ERRORS, TimeoutError):
                async with asyncio.timeout(self.connect_timeout):
                    await connection.close()

    def _start(self) -> asyncio.Event:
        if self._ready is None or not self._tasks:
            self._ready, self.failure = asyncio.Event(), None
            self._tasks.spawn(self._supervise(self._ready), name=f'amqp supervisor {mask_dsn(self._dsn)}')
        return self._ready

    async def _supervise(self, ready: asyncio.Event) -> None:
        backoff = Backoff(self.reconnect_delay, self.max_reconnect_delay)
        failed = 0
        # Before the first connection: each host's fatal failure (None: one that may pass) in this round.
        causes: list[ConnectError | None] = []
        while True:
            connection = await self._connect()
            if connection is None:
                self._host = (self._host + 1) % len(self.hosts)
                failed += 1
                if not self.connects and self._last_exc is not None:
                    causes.append(connect_error(self.owner, self._dsn, self._last_exc))
                if failed % len(self.hosts):
                    continue  # the next host at once: a round of them all comes before the backoff
                if len(causes) == len(self.hosts) and all(causes):
                    self.failure = causes[-1]  # every host failed for good: waiters raise it
                    ready.set()  # the next get() tries again
                    return
                causes.clear()
                # Backoff between attempts, not synchronisation: nothing to wait on but time.
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            failed = 0
            self._connection = connection
            self.connects += 1
            ready.set()
            await asyncio.wait([connection.closing])
            ready.clear()
            self._connection = None
            self.last_error = self._closing_reason(connection)
            self.log.warning('AMQP connection to %s lost (%s); reconnecting', self.host, self.last_error)
            # Its node may be the one that went down: the next host first (the same one when it is alone).
            self._host = (self._host + 1) % len(self.hosts)

    async def _connect(self) -> aiormq.abc.AbstractConnection | None:
        lane = Lane(self.log) if self.fast_lane and lane_problem() is None else None
        url = self.hosts[self._host]
        if lane is None:
            # No transport_factory at all: before aiormq 6.9.1 it would reach the socket's kwargs.
            connection = aiormq.Connection(url, context=self.ssl_context)
        else:
            connection = aiormq.Connection(url, context=self.ssl_context, transport_factory=LaneTransport(lane))
        try:
            async with asyncio.timeout(self.connect_timeout):
                await connection.connect()
            if lane is not None and not lane.bind(connection):
                # Passed the checks, yet not shaped as they said: plain aiormq from the next connect on.
                report('the connection has no write queue the lane can share')
                self.fast_lane = False
                raise BackendError('AMQP fast lane cannot bind; reconnecting on plain aiormq')
        except Exception as exc:  # noqa: BLE001 - whatever fails, the supervisor retries forever
            self._last_exc = exc
            self.last_error = self.mask(f'{type(exc).__name__}: {exc}')
            self.log.warning('AMQP connect to %s failed: %s', self.host, self.last_error)
            with contextlib.suppress(*CONNECTION_ERRORS, TimeoutError):
                async with asyncio.timeout(1):
                    await connection.close()
            return None
        if lane is not None:
            self._lanes[connection] = lane
        self.log.info('AMQP connected to %s', self.host)
        return connection

    def _closing_reason(self, connection: aiormq.abc.AbstractConnection) -> str:
        closing = connection.closing
        if closing.cancelled():
            return 'closed'
        exc = closing.exception()
        return self.mask(f'{type(exc).__name__}: {exc}') if exc else 'closed'


async def close_channel(channel: aiormq.abc.AbstractChannel | None) -> None:
    """Close *channel* if open, ignoring a connection that is already gone (bounded wait)."""
    if channel is not None and not channel.is_closed:
        with contextlib.suppress(*CONNECTION_ERRORS, TimeoutError):
            async with asyncio.timeout(5):
                await channel.close()


async def wait_closed(channel: aiormq.abc.AbstractChannel | None, timeout: float) -> None:
    """Wait (at most 1 s) until a failing channel is marked closed, so the next try opens a new one."""
    if channel is None or channel.is_closed or timeout <= 0:
        return
    await asyncio.wait([channel.closing], timeout=min(timeout, 1.0))
