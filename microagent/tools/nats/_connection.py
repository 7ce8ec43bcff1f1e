"""Lazy, password-safe NATS connections shared by the NATS bus, broker and lease.

DSN: ``nats://[user:password@]host[:4222][,host2[:4222]...]`` (``user@host``
alone: a token) or ``tls://`` (TLS, the server certificate verified against
the system CAs unless an ``ssl_context`` is given). Several hosts are one
cluster: the client picks one and fails over to the others.

Nothing connects at construction and no event loop is needed: the client is
made on first use inside a running loop (and made again if the loop changed).

* **Start-up fails fast.** The first connect tries every server once: wrong
  credentials, an unknown host or nothing listening raise a
  :class:`~microagent.exceptions.ConnectError` at once, naming the cause, with the password masked.
* **Then the client rides through outages.** Once connected, nats-py's own
  reconnect machinery takes over (for ever, ``reconnect_delay`` between
  rounds); every disconnect and reconnect is logged, and listeners (the
  broker's readers) hear about reconnects. Publishes made while the client is
  reconnecting wait in its buffer and go out once it is back.

Every error that leaves this package is a :class:`BackendError` whose text went
through :func:`mask_text`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext

from ..._connect import AUTH, cause_of, connect_error
from ..._dsn import mask_dsn, mask_text, password_of, split_dsn
from ...exceptions import BackendError, ConfigurationError

__all__ = ['NATSAddress', 'NATSConnector', 'parse_dsn', 'subject_token']

DEFAULT_PORT = 4222
SCHEMES = ('nats', 'tls')
_BAD_TOKEN = frozenset(' \t\r\n.*>')


@dataclass(frozen=True)
class NATSAddress:
    """A parsed NATS DSN: server URLs without credentials, the credentials apart.

    >>> parse_dsn('nats://u:pw@a,b:4223').servers
    ('nats://a:4222', 'nats://b:4223')
    """

    servers: tuple[str, ...]
    user: str | None
    password: str | None
    token: str | None
    tls: bool

    def __repr__(self) -> str:
        return f'<NATSAddress {",".join(self.servers)} user={self.user!r}>'


def parse_dsn(dsn: str) -> NATSAddress:
    """Split ``nats://[user:pw@]h1[:p1][,h2[:p2]]`` into server URLs and credentials (ConfigurationError).

    >>> parse_dsn('tls://h1:4443').tls
    True
    """
    parts = split_dsn(dsn)
    if parts.scheme not in SCHEMES:
        raise ConfigurationError(f'NATS backends need a nats:// or tls:// DSN, got {mask_dsn(dsn)!r}')
    if parts.path.strip('/') or parts.query or parts.fragment:
        raise ConfigurationError(f'NATS DSN {mask_dsn(dsn)!r}: no path or query is expected')
    user, password, token = parts.user, parts.password, None
    if password is None:
        user, token = None, user  # a user name without a password is a token
    servers = tuple(_server(parts.scheme, host, dsn) for host in parts.hosts or ('',))
    return NATSAddress(servers, user, password, token, parts.scheme == 'tls')


def _server(scheme: str, host: str, dsn: str) -> str:
    host = host.strip()
    try:
        parts = urllib.parse.urlsplit(f'//{host}')
        port = parts.port or DEFAULT_PORT
    except ValueError:
        parts, port = None, 0
    if parts is None or not parts.hostname:
        raise ConfigurationError(f'NATS DSN {mask_dsn(dsn)!r}: bad host {host!r}')
    name = f'[{parts.hostname}]' if ':' in parts.hostname else parts.hostname
    return f'{scheme}://{name}:{port}'


def subject_token(kind: str, value: str) -> str:
    """*value* if it is usable inside a subject or a stream name (no dots, wildcards or spaces)."""
    if not value or any(c in _BAD_TOKEN for c in value):
        raise ConfigurationError(f'NATS: {kind} {value!r} cannot be part of a subject (no ".", "*", ">" or spaces)')
    return value


Listener = Callable[[], None]


class NATSConnector:
    """One nats-py client for one DSN, made lazily in the running loop.

    Options: ``connect_timeout`` (seconds per server on the first connect),
    ``reconnect_delay`` (seconds between reconnect rounds), ``ping_interval``
    (seconds; two unanswered pings drop a half-open connection),
    ``ssl_context`` (``tls://``: defaults to the system CAs) and ``name`` (shown
    in the server's monitoring).

    Not run: needs a NATS server.
    >>> connector = NATSConnector('nats://localhost:4222', 'microagent.bus')   # doctest: +SKIP
    >>> client = await connector.client()                                     # doctest: +SKIP
    """

    def __init__(self, dsn: str, name: str, *, connect_timeout: float = 5.0, reconnect_delay: float = 0.5,
                 ping_interval: float = 5.0, ssl_context: ssl.SSLContext | None = None,
                 log: logging.Logger | None = None, owner: str = 'NATS') -> None:
        if connect_timeout <= 0 or reconnect_delay <= 0 or ping_interval <= 0:
            raise ConfigurationError('NATS: connect_timeout, reconnect_delay and ping_interval must be > 0')
        self.dsn = dsn
        self.address = parse_dsn(dsn)
        self.name = name
        self.owner = owner  # who connects, named in a ConnectError
        self.password = password_of(dsn) or self.address.password or self.address.token
        self.connect_timeout = connect_timeout
        self.reconnect_delay = reconnect_delay
        self.ping_interval = ping_interval
        self.ssl_context = ssl_context
        self.log = log or logging.getLogger('microagent.nats')
        self.listeners: list[Listener] = []
        self.reconnects = 0
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._starting: _Start | None = None
        self._lost_at: float | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f'<NATSConnector {mask_dsn(self.dsn)} {self.name}>'

    def current(self) -> Client | None:
        """The client of the running loop if one is connected (or reconnecting), else None."""
        client = self._client
        if client is None or self._loop is not asyncio.get_running_loop() or client.is_closed:
            return None
        return client

    async def client(self) -> Client:
        """The connected client of the running loop (connecting first; BackendError at once if that fails)."""
        client = self.current()
        if client is not None:
            return client
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop, self._client, self._js = asyncio.Lock(), loop, None, None
        async with self._lock:
            client = self.current()
            if client is None:
                client = self._client = await self._connect()
                self._js = None
        return client

    async def jetstream(self) -> JetStreamContext:
        """The JetStream context of the running loop's client."""
        client = await self.client()
        js = self._js
        if js is None:
            js = self._js = client.jetstream(timeout=self.connect_timeout)
        return js

    async def _connect(self) -> Client:
        client = Client()
        start = self._starting = _Start(len(self.address.servers))
        tls = self.ssl_context or (ssl.create_default_context() if self.address.tls else None)
        options: dict[str, Any] = {
            'servers': list(self.address.servers), 'name': self.name, 'user': self.address.user,
            'password': self.address.password, 'token': self.address.token, 'tls': tls,
            'connect_timeout': self.connect_timeout, 'reconnect_time_wait': self.reconnect_delay,
            'max_reconnect_attempts': -1, 'ping_interval': self.ping_interval, 'max_outstanding_pings': 2,
            'error_cb': self._on_error, 'disconnected_cb': self._on_disconnected,
            'reconnected_cb': self._on_reconnected, 'closed_cb': self._on_closed,
        }
        task = asyncio.ensure_future(client.connect(**options))
        try:
            # Every server tried once and refused: that is the answer, no reconnect loop at start-up.
            failed = asyncio.ensure_future(start.failed.wait())
            limit = self.connect_timeout * len(self.address.servers) + self.reconnect_delay + 1
            done, _ = await asyncio.wait({task, failed}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            failed.cancel()
            if task not in done:
                raise self.error(start.last or TimeoutError(f'no answer within {limit:.0f}s'), 'cannot connect')
            task.result()
        except BaseException as exc:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await self._quietly_close(client)
            if isinstance(exc, BackendError | asyncio.CancelledError):
                raise
            raise self.error(exc, 'cannot connect') from None
        finally:
            self._starting = None
        self._lost_at = None
        return client

    def connected(self) -> bool:
        """Whether the running loop's client is connected now (not reconnecting)."""
        client = self.current()
        return client is not None and client.is_connected

    def error(self, exc: BaseException, action: str = 'NATS request failed') -> BackendError:
        """A BackendError for *exc* (a ConnectError when it names a cause), with the password masked out."""
        fatal = connect_error(self.owner, self.dsn, exc)
        if fatal is not None:
            return fatal
        return BackendError(mask_text(f'{action} ({mask_dsn(self.dsn)}): {self.describe(exc)}', self.password))

    def describe(self, exc: BaseException) -> str:
        """A short, masked description of *exc* for logs."""
        text = str(exc).strip()
        return mask_text(f'{type(exc).__name__}: {text}' if text else type(exc).__name__, self.password)

    async def _on_error(self, exc: Exception) -> None:
        start = self._starting
        if start is not None:
            start.note(exc)
            return
        self.log.debug('NATS %s: %s', self.name, self.describe(exc))

    async def _on_disconnected(self) -> None:
        if self._starting is not None or self._lost_at is not None or self._closing:
            return
        self._lost_at = time.monotonic()
        self.log.warning('NATS %s: disconnected from %s; reconnecting', self.name, mask_dsn(self.dsn))

    async def _on_reconnected(self) -> None:
        lost_at, self._lost_at = self._lost_at, None
        self.reconnects += 1
        client = self._client
        url = client.connected_url.netloc.rpartition('@')[2] if client and client.connected_url else '?'
        took = f' after {time.monotonic() - lost_at:.3f}s' if lost_at is not None else ''
        self.log.warning('NATS %s: reconnected to %s%s', self.name, url, took)
        for listener in list(self.listeners):
            listener()

    async def _on_closed(self) -> None:
        self.log.debug('NATS %s: connection closed', self.name)

    @staticmethod
    async def _quietly_close(client: Client) -> None:
        # Closing a half-made or broken client must never fail the caller.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await client.close()

    async def close(self) -> None:
        """Close the client once the server has what it buffered (acks above all); the next use connects again."""
        client, loop = self._client, self._loop
        self._client, self._js, self._lost_at = None, None, None
        if client is None or loop is not asyncio.get_running_loop():
            return  # one made in another (finished) loop cannot be closed from here: dropped
        self._closing = True
        try:
            if client.is_connected:
                # A PING answered after everything we wrote: acks sent just before a stop are not lost.
                with contextlib.suppress(Exception):
                    await client.flush(timeout=2)
            await self._quietly_close(client)
        finally:
            self._closing = False


class _Start:
    """The first connect's failures: once every server failed, it has failed."""

    def __init__(self, servers: int) -> None:
        self.servers = servers
        self.failures = 0
        self.last: BaseException | None = None
        self.failed = asyncio.Event()

    def note(self, exc: BaseException) -> None:
        self.failures += 1
        # A refused login may be followed by the server's reset of the connection: the login is the news.
        if self.last is None or cause_of(self.last) != AUTH:
            self.last = exc
        if self.failures >= self.servers:
            self.failed.set()
