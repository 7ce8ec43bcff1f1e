"""The Redis signal bus: one pub/sub channel per signal, one subscriber connection per bus.

A reader task owned by the bus holds the subscriber connection. When the
connection drops it reconnects with capped backoff, subscribes every bound
channel again and logs how long the bus was deaf (signals sent meanwhile are
lost: pub/sub is at most once).

Channel prefixes are bound with ``PSUBSCRIBE <prefix>*``: that is how the bus
reads microagent 1.9's channels (``PREFIX:signal:sender``) beside its own.

On a Redis Cluster (``redis+cluster://``) the bus keeps classic pub/sub: a
message published on any node reaches the subscribers of every node, and
patterns work (sharded pub/sub has none). The subscriber connects to any node
that answers; when that node dies it subscribes again on another one.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Any

from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from ..._backoff import Backoff
from ...bus import AbstractSignalBus
from ...exceptions import BackendError, ConfigurationError, ConnectError
from ...wire import glob_escape
from ._cluster import connector_for
from ._connection import RedisLane, close_connection

__all__ = ['RedisSignalBus']


class RedisSignalBus(AbstractSignalBus):
    """Signal bus on Redis pub/sub, with RPC over it.

    Options beyond the common ones (``uid``, ``prefix``, ``log``, ``catalog``):
    ``reconnect_delay``/``max_reconnect_delay`` (capped backoff of the
    subscriber) and ``subscribe_timeout`` (how long ``bind`` waits for Redis
    to confirm a subscription).

    Not run: needs a Redis server.
    >>> bus = RedisSignalBus('redis://localhost/7')              # doctest: +SKIP
    >>> await bus.user_created.send('user_agent', user_id=1)     # doctest: +SKIP
    >>> await bus.rpc_comments_count.call('api', user_id=1)      # doctest: +SKIP
    {'CommentAgent.count': 3}
    """

    prefix_binds = True

    def __init__(self, dsn: str, *, reconnect_delay: float = 0.05, max_reconnect_delay: float = 2.0,
                 subscribe_timeout: float = 10.0, **options: Any) -> None:
        super().__init__(dsn, **options)
        if reconnect_delay <= 0 or max_reconnect_delay < reconnect_delay or subscribe_timeout <= 0:
            raise ConfigurationError('RedisSignalBus: 0 < reconnect_delay <= max_reconnect_delay, '
                                     'subscribe_timeout > 0')
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.subscribe_timeout = subscribe_timeout
        self.redis = connector_for(dsn, f'microagent.bus.{self.uid}', owner=type(self).__name__)
        self._lane = RedisLane(self.redis)
        self.reconnects = 0
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._subscribed: set[str] = set()
        self._psubscribed: set[str] = set()
        self._names: dict[bytes, str] = {}
        self._changed: asyncio.Event | None = None
        self._conn: Connection | None = None
        self._reader: asyncio.Task[Any] | None = None
        self._lost_at: float | None = None
        self._backoff = Backoff(reconnect_delay, max_reconnect_delay)
        self._failure: ConnectError | None = None  # why the reader's first connection failed for good

    async def send(self, channel: str, message: str) -> None:
        try:
            await self._lane.execute('PUBLISH', channel, message)
        except RedisError as exc:
            raise self.redis.error(exc, f'cannot publish to {channel}') from None

    async def bind(self, channel: str) -> None:
        self._channels.add(channel)
        await self._subscribe('SUBSCRIBE', channel, self._subscribed)

    async def bind_prefix(self, head: str) -> None:
        """Subscribe to every channel starting with *head* (``PSUBSCRIBE``)."""
        pattern = glob_escape(head) + '*'
        self._patterns.add(pattern)
        await self._subscribe('PSUBSCRIBE', pattern, self._psubscribed)

    async def _subscribe(self, command: str, name: str, confirmed: set[str]) -> None:
        changed = self._ensure_reader()
        conn = self._conn
        if conn is not None:
            # On failure the reader reconnects and subscribes every bound channel and pattern.
            with contextlib.suppress(RedisError, OSError):
                await conn.send_command(command, name, check_health=False)
        try:
            async with asyncio.timeout(self.subscribe_timeout):
                while name not in confirmed:
                    if self._failure is not None:
                        raise self._failure
                    changed.clear()
                    await changed.wait()
        except TimeoutError:
            raise BackendError(f'{self!r}: Redis did not confirm the subscription to {name} '
                               f'within {self.subscribe_timeout}s') from None

    def connected(self) -> bool:
        """Whether the subscriber connection is up and Redis confirmed every bound channel and pattern."""
        return self._conn is not None and self._channels <= self._subscribed and self._patterns <= self._psubscribed

    async def close(self) -> None:
        await super().close()
        self._reader = None
        self._channels.clear()
        self._patterns.clear()
        self._subscribed.clear()
        self._psubscribed.clear()
        await self._lane.close()
        await self.redis.close()

    def _ensure_reader(self) -> asyncio.Event:
        reader = self._reader
        if reader is None or reader.done() or reader.get_loop() is not asyncio.get_running_loop():
            self._changed, self._conn, self._failure = asyncio.Event(), None, None
            self._subscribed.clear()
            self._psubscribed.clear()
            self._reader = self._tasks.spawn(self._read_forever(), name=f'RedisSignalBus reader {self.uid}')
        if self._changed is None:  # pragma: no cover - set together with the reader
            self._changed = asyncio.Event()
        return self._changed

    async def _read_forever(self) -> None:
        first = True
        while True:
            conn: Connection | None = None
            try:
                try:
                    conn = await self.redis.connection(socket_timeout=10.0)
                except ConnectError as exc:
                    if first:
                        # A refused login, an unknown host, nothing listening: binds raise it now.
                        self._give_up(exc)
                        return
                    raise
                first = False
                self._conn = conn
                # The channel set is read after _conn is published: a concurrent bind either
                # sees _conn and subscribes itself, or is already in this snapshot.
                if self._channels:
                    await conn.send_command('SUBSCRIBE', *self._channels, check_health=False)
                if self._patterns:
                    await conn.send_command('PSUBSCRIBE', *self._patterns, check_health=False)
                await self._listen(conn)
            except (RedisError, OSError, BackendError) as exc:
                delay = self._backoff.next()
                self.log.warning('RedisSignalBus: subscriber connection lost: %s; reconnecting in %.2fs',
                                 self.redis.describe(exc), delay)
            else:  # pragma: no cover - _listen returns only by raising
                delay = self._backoff.next()
            finally:
                self._conn = None
                self._subscribed.clear()
                self._psubscribed.clear()
                await close_connection(conn)
            if self._lost_at is None:
                self._lost_at = time.monotonic()
            await asyncio.sleep(delay)  # backoff between attempts, not synchronisation

    def _give_up(self, exc: ConnectError) -> None:
        self._failure = exc
        if self._changed is not None:
            self._changed.set()

    async def _listen(self, conn: Connection) -> None:
        changed = self._changed
        while True:
            reply = await conn.read_response(timeout=math.inf, disconnect_on_error=False)
            kind = reply[0]
            if kind == b'message':
                self._dispatch(reply[1], reply[2])
            elif kind == b'pmessage':
                self._dispatch(reply[2], reply[3])
            elif kind in (b'subscribe', b'psubscribe'):
                (self._subscribed if kind == b'subscribe' else self._psubscribed).add(self._name(reply[1]))
                if changed is not None:
                    changed.set()
                if self._lost_at is not None:
                    self._resumed()

    def _resumed(self) -> None:
        if self._lost_at is None:
            return
        self.reconnects += 1
        self.log.warning('RedisSignalBus: subscribed again after %.3fs deaf (%d channels)',
                         time.monotonic() - self._lost_at, len(self._channels))
        self._lost_at = None
        self._backoff.reset()

    def _name(self, raw: bytes) -> str:
        name = self._names.get(raw)
        if name is None:
            name = raw.decode()
            if len(self._names) < 10_000:  # 1.9 channels carry sender and request id: no unbounded cache
                self._names[raw] = name
        return name

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        try:
            self.receiver(self._name(channel), data)
        except Exception:
            self.log.exception('RedisSignalBus: cannot dispatch a message on %s', self._name(channel))
