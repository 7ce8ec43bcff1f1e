"""Lazy, password-safe Redis connections shared by the Redis bus and broker.

Nothing connects at construction and no event loop is needed: clients are
made on first use inside a running loop (and made again if the loop changed,
so an object built at import time works under ``asyncio.run``). Every error
that leaves this package is a :class:`BackendError` whose text went through
:func:`mask_text`, so the DSN password never shows.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import urllib.parse
from typing import Any

import redis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, Connection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError, ResponseError, TimeoutError  # noqa: A004

from ..._connect import connect_error
from ..._dsn import mask_dsn, mask_text, password_of
from ...exceptions import BackendError, ConfigurationError

__all__ = ['FAST_WRITES', 'RedisConnector', 'RedisLane', 'close_connection', 'command', 'fast_writer', 'pack',
           'pack_args']

# The redis-py releases whose connection keeps its stream as ``_writer``, as fast_writer() expects. The
# redis-py major is read once at import; tests set this False to run the public write path.
FAST_WRITES = redis.__version__.split('.')[0] in {'5', '6', '7', '8'}

# No CLIENT SETINFO on connect (two round trips less per new connection): redis-py 7.2+ says so with
# driver_info=None (its lib_name/lib_version then warn as deprecated); older releases with those two.
_NO_SETINFO: dict[str, Any] = (
    {'driver_info': None} if 'driver_info' in inspect.signature(AbstractConnection.__init__).parameters
    else {'lib_name': None, 'lib_version': None})


def _check_dsn(dsn: str) -> None:
    try:
        parts = urllib.parse.urlsplit(dsn)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigurationError(f'bad Redis DSN {mask_dsn(dsn)!r}: {mask_text(str(exc), password_of(dsn))}') from None
    if parts.scheme.lower() not in ('redis', 'rediss'):
        raise ConfigurationError(f'Redis backends need a redis:// or rediss:// DSN, got {parts.scheme!r}')


class RedisConnector:
    """Redis clients for one DSN, made lazily per event loop.

    ``client()`` is a pooled client (commands retried by redis-py on a lost
    connection); ``connection()`` is a bare connection for a reader that
    handles reconnection itself (no hidden retries: it must see every gap).

    Not run: needs a Redis server.
    >>> connector = RedisConnector('redis://localhost/7', 'microagent.bus.1')  # doctest: +SKIP
    >>> await connector.client().ping()                                        # doctest: +SKIP
    """

    # Commands of the hot paths may run on dedicated connections (RedisLane). A cluster connector says no:
    # there, every command goes where its key's slot lives, through the cluster client.
    dedicated = True
    cluster = False

    def __init__(self, dsn: str, client_name: str, callbacks: dict[str, Any] | None = None, *,
                 owner: str = 'Redis', **options: Any) -> None:
        self.check_dsn(dsn)
        self.owner = owner  # who connects, named in a ConnectError
        self.callbacks = callbacks or {}
        self.dsn = dsn
        self.client_name = client_name
        self.password = password_of(dsn)
        # RESP2: the reply shapes parsed here (XREADGROUP, pub/sub) do not depend on redis-py's default.
        self.options: dict[str, Any] = {'protocol': 2, **_NO_SETINFO,
                                        'socket_connect_timeout': 5.0, 'socket_timeout': 10.0,
                                        'socket_keepalive': True, **options}
        if dsn.lower().startswith('rediss:'):
            # redis-py checks the certificate's host name by default only from 6.0 on.
            self.options.setdefault('ssl_check_hostname', True)
        self._client: Redis | None = None
        self._raw_pool: ConnectionPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f'<{type(self).__name__} {mask_dsn(self.dsn)} {self.client_name}>'

    def check_dsn(self, dsn: str) -> None:
        """Raise ConfigurationError unless *dsn* is one this connector serves."""
        _check_dsn(dsn)

    def client(self) -> Redis:
        """The pooled client of the running loop (no connection is opened until a command runs)."""
        client = self._client
        if client is None or self._loop is not asyncio.get_running_loop():
            client = self._client = Redis.from_url(self.dsn, client_name=self.client_name, **self.options)
            for command, callback in self.callbacks.items():
                client.set_response_callback(command, callback)
            self._raw_pool = None
            self._loop = asyncio.get_running_loop()
        return client

    def active(self) -> bool:
        """Whether a client was made in the running loop (and so may hold connections)."""
        return self._client is not None and self._loop is asyncio.get_running_loop()

    async def connection(self, socket_timeout: float | None = None, key: str | None = None) -> Connection:
        """A new connected bare connection (no retries: errors reach the caller).

        *key*: the connection will serve commands on this key (a cluster
        connects to the node of its slot; one server ignores it).
        A refused login, an unknown host or nothing listening raise a :class:`ConnectError`
        (the caller decides whether that is fatal), anything else a :class:`BackendError`.
        """
        self.client()
        if self._raw_pool is None:
            options = {**self.options, 'retry': Retry(NoBackoff(), 0)}
            self._raw_pool = ConnectionPool.from_url(self.dsn, client_name=self.client_name, **options)
        conn: Connection = self._raw_pool.make_connection()  # type: ignore[no-untyped-call]
        if socket_timeout is not None:
            conn.socket_timeout = socket_timeout
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            raise self.error(exc, 'cannot connect') from None
        return conn

    def error(self, exc: BaseException, action: str = 'Redis command failed') -> BackendError:
        """A BackendError for *exc* (a ConnectError when it names a cause), with the password masked out."""
        fatal = connect_error(self.owner, self.dsn, exc)
        if fatal is not None:
            return fatal
        text = mask_text(f'{action} ({mask_dsn(self.dsn)}): {type(exc).__name__}: {exc}', self.password)
        return BackendError(text)

    def describe(self, exc: BaseException) -> str:
        """A short, masked description of *exc* for logs."""
        return mask_text(f'{type(exc).__name__}: {exc}', self.password)

    async def close(self) -> None:
        """Close the pooled client; the next use opens a new one."""
        client, loop = self._client, self._loop
        self._client, self._raw_pool, self._loop = None, None, None
        if client is None or loop is not asyncio.get_running_loop():
            return  # one made in another (finished) loop cannot be closed from here: dropped
        # Closing a broken client must not fail close().
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(5):
                await client.aclose()


async def close_connection(conn: Connection | None) -> None:
    """Disconnect *conn* without waiting on a dead peer."""
    if conn is None:
        return
    with contextlib.suppress(RedisError, OSError):  # it is being dropped anyway
        await conn.disconnect(nowait=True)


class RedisLane:
    """A dedicated connection running one command at a time, without the pool's per-command cost.

    The hot paths (XADD, acks) go through it. While it is busy, callers use the
    pooled client instead, so concurrent callers still run in parallel.

    Not run: needs a Redis server.
    >>> lane = RedisLane(connector)                                  # doctest: +SKIP
    >>> await lane.execute('XADD', 'stream', '*', 'b', '{}')    # doctest: +SKIP
    """

    def __init__(self, connector: RedisConnector) -> None:
        self.connector = connector
        self._conn: Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False

    async def execute(self, *args: Any, raw: bytes = b'') -> Any:
        """Run the command *args* (sent as *raw* when given: the same command, already packed)."""
        if not self.connector.dedicated:
            return await self.connector.client().execute_command(*args)  # type: ignore[no-untyped-call]
        if self._busy or self._loop not in (None, asyncio.get_running_loop()):
            if not self._busy:
                self._conn, self._loop = None, None  # made in another loop: unusable here
            return await self.connector.client().execute_command(*args)  # type: ignore[no-untyped-call]
        self._busy = True
        try:
            return await self._execute(args, raw)
        except (ConnectionError, TimeoutError):
            # Once more through the pool (which retries with backoff): at least once, maybe twice.
            return await self.connector.client().execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            self._busy = False

    async def _execute(self, args: tuple[Any, ...], raw: bytes) -> Any:
        conn = self._conn
        if conn is None:
            conn = self._conn = await self.connector.connection()
            self._loop = asyncio.get_running_loop()
        try:
            return await command(conn, *args, raw=raw)
        except ResponseError:
            raise  # an error reply: the connection is still in step
        except BaseException:
            # Lost, timed out or cancelled mid-command: the connection is out of step.
            self._conn = None
            await close_connection(conn)
            raise

    async def close(self) -> None:
        conn, loop, self._conn, self._loop = self._conn, self._loop, None, None
        if loop is asyncio.get_running_loop():  # one of another (finished) loop is just dropped
            await close_connection(conn)


def pack(*args: Any) -> bytes:
    """One command in RESP: ``pack('XADD', 'q', '*', 'b', '{}')`` (str, bytes, int or float arguments)."""
    return b'*%d\r\n' % len(args) + pack_args(*args)


def pack_args(*args: Any) -> bytes:
    """The arguments of a command in RESP, without the array header (to prebuild fixed prefixes)."""
    out = []
    for arg in args:
        kind = type(arg)
        if kind is str:
            data = arg.encode()
        elif kind is bytes:
            data = arg
        elif isinstance(arg, bytes | bytearray | memoryview):
            data = bytes(arg)
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise TypeError(f'cannot send a {kind.__name__} to Redis')
        out.append(b'$%d\r\n%s\r\n' % (len(data), data))
    return b''.join(out)


def fast_writer(conn: Connection) -> asyncio.StreamWriter | None:
    """The stream *conn* writes to, where the fast write path may use it; None: redis-py's public path.

    redis-py's ``send_packed_command`` runs each write in a task of its own
    (``asyncio.wait_for``, as the connection has a ``socket_timeout``): measured,
    that costs about a sixth of the Redis hot path (docs/performance.md). So
    where redis-py is a release whose connection keeps its stream as
    ``_writer`` (5.x to 8.x, :data:`FAST_WRITES`) and this connection has one,
    a write is a plain buffer append; anywhere else it takes the public API.
    """
    if not FAST_WRITES or getattr(type(conn), 'public_writes', False):
        return None  # redis-py's public path for every connection class that asks for it (Redis Cluster's)
    writer = getattr(conn, '_writer', None)
    return writer if type(writer) is asyncio.StreamWriter else None


async def command(conn: Connection, *args: Any, timeout: float = 10.0, raw: bytes = b'') -> Any:
    """Write one command on *conn* (or *raw*, already packed commands) and read the first reply.

    The write takes the fast path of :func:`fast_writer` where it can (only a
    full buffer is awaited, within *timeout*), else ``send_packed_command``;
    the reply is read with ``read_response`` within *timeout*.
    """
    if not conn.is_connected:
        raise ConnectionError('not connected')
    data = raw or pack(*args)
    writer = fast_writer(conn)
    if writer is None:
        await conn.send_packed_command(data, check_health=False)
    else:
        writer.write(data)
        if writer.transport.get_write_buffer_size() > 65536:
            async with asyncio.timeout(timeout):
                await writer.drain()
    return await conn.read_response(timeout=timeout)
