"""AMQPSignalBus: signals and RPC over one RabbitMQ topic exchange per project prefix.

Every channel (``PREFIX:signal``, ``PREFIX:response:<uid>``) is a routing key
on the durable topic exchange ``microagent.signals.<PREFIX>``. Each bus reads
one server-named, exclusive, auto-delete queue bound to the channels it binds,
so RPC responses come back through the caller's own queue. Signals are at most
once (no confirms, no acks).

Buses with the same DSN in one event loop share a :class:`_Hub`: two robust
connections (publishing on its own, so RabbitMQ's flow control of a busy
publisher never stalls deliveries), one publish channel and one consuming channel, whose supervisor
re-subscribes every bus (a new queue, every channel rebound) after a loss. A
new bus thus costs a queue, not a connection and its tasks. Publishes are
written and signals received through the connections' lanes (``amqp._lane``):
a received signal reaches the bus in the protocol callback. Without a lane
(``fast_lane=False``, or an aiormq it does not fit) both go through aiormq's
channel API.
"""
from __future__ import annotations

import asyncio
import contextlib
import ssl
import weakref
from collections.abc import Sequence
from typing import Any

import aiormq
import aiormq.abc
from pamqp.commands import Basic

from ..._backoff import Backoff
from ..._tasks import TaskSet
from ...bus import AbstractSignalBus
from ...exceptions import BackendError, ConnectError
from ._connection import CONNECTION_ERRORS, RobustConnection, close_channel, wait_closed
from ._deliveries import Deliveries, Incoming
from ._hosts import dsn_of
from ._lane import Lane, publish_frames

__all__ = ['AMQPSignalBus']

# Signals are at most once: transient, and no message id (nothing maps a return or confirm back).
_TRANSIENT = Basic.Properties(delivery_mode=1)
# Per event loop, the hub of each (DSN, fast_lane).
_HUBS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, bool], _Hub]] = \
    weakref.WeakKeyDictionary()


class _Hub:
    """The connection and channels shared by the buses of one DSN in one event loop."""

    def __init__(self, connection: RobustConnection, publish_connection: RobustConnection) -> None:
        self.connection = connection
        self.publish_connection = publish_connection
        self.members: set[AMQPSignalBus] = set()
        self.publisher: aiormq.abc.AbstractChannel | None = None
        self.lane: Lane | None = None
        self.exchanges: set[str] = set()
        self.sub: aiormq.abc.AbstractChannel | None = None
        self.deliveries: Deliveries | None = None
        self.subscribed = asyncio.Event()
        self.failure: ConnectError | None = None  # why the first connection cannot succeed
        self.tasks = TaskSet('amqp bus hub')
        self._lock = asyncio.Lock()

    async def publish(self, exchange: str, key: str, body: bytes, timeout: float) -> None:
        channel, lane = self.publisher, self.lane
        if channel is None or channel.is_closed or exchange not in self.exchanges:
            channel, lane = await self._publish_channel(exchange, timeout)
        if lane is None:
            # Properties of its own: aiormq writes a message id into the ones it is given.
            await channel.basic_publish(body, exchange=exchange, routing_key=key,
                                        properties=Basic.Properties(delivery_mode=1), timeout=timeout)
            return
        number = channel.number
        data = publish_frames(number, lane.publish_method(number, exchange, key, mandatory=False), body,
                              _TRANSIENT, lane.max_content_size)
        await lane.send(data, timeout)

    async def _publish_channel(self, exchange: str, timeout: float
                               ) -> tuple[aiormq.abc.AbstractChannel, Lane | None]:
        async with self._lock:
            channel, lane = self.publisher, self.lane
            if channel is None or channel.is_closed:
                channel, lane = await self.publish_connection.channel(timeout)
                self.publisher, self.lane = channel, lane
                self.exchanges.clear()
            if exchange not in self.exchanges:
                await channel.exchange_declare(exchange, exchange_type='topic', durable=True, timeout=timeout)
                self.exchanges.add(exchange)
            return channel, lane

    async def subscription(self, timeout: float) -> tuple[aiormq.abc.AbstractChannel, Deliveries | None]:
        """The consuming channel and its lane's deliveries (None: plain), waiting for them up to *timeout*."""
        if not self.tasks:
            self.failure = None
            self.tasks.spawn(self._supervise(), name='amqp bus hub supervisor')
        try:
            async with asyncio.timeout(max(0.001, timeout)):
                while True:
                    await self.subscribed.wait()
                    sub, deliveries = self.sub, self.deliveries
                    if sub is not None and not sub.is_closed:
                        return sub, deliveries
                    if self.failure is not None:
                        raise self.failure
                    self.subscribed.clear()
        except TimeoutError:
            reason = f': {self.connection.last_error}' if self.connection.last_error else ''
            raise BackendError(f'{self.connection!r}: cannot subscribe within {timeout:.1f}s{reason}') from None

    async def _supervise(self) -> None:
        backoff = Backoff(self.connection.reconnect_delay, self.connection.max_reconnect_delay)
        while True:
            try:
                await self.connection.get(None)
                channel, lane = await self.connection.channel(self.connection.connect_timeout)
            except ConnectError as exc:
                self.failure = exc  # never connected: subscribers raise it, the next one starts over
                self.subscribed.set()
                return
            except (*CONNECTION_ERRORS, TimeoutError) as exc:
                delay = backoff.next()
                self.connection.log.warning('AMQP bus: cannot open a channel (%s); retrying in %.1fs',
                                            self.connection.mask(f'{type(exc).__name__}: {exc}'), delay)
                await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
                continue
            backoff.reset()
            deliveries = None if lane is None else Deliveries(channel, lane)
            for bus in tuple(self.members):
                if bus.listening:
                    await self._attach(bus, channel, deliveries)
            self.sub, self.deliveries = channel, deliveries
            self.subscribed.set()
            await asyncio.wait([channel.closing])
            self.subscribed.clear()
            self.sub = self.deliveries = None
            self.connection.log.warning('AMQP bus: consuming channel closed; re-subscribing %d buses',
                                        len(self.members))

    async def _attach(self, bus: AMQPSignalBus, channel: aiormq.abc.AbstractChannel,
                      deliveries: Deliveries | None) -> None:
        try:
            await bus.attach(channel, deliveries)
        except (*CONNECTION_ERRORS, TimeoutError) as exc:
            # The channel is failing: its closing starts the next round, which attaches again.
            self.connection.log.warning('AMQP bus: cannot re-subscribe %r (%s)', bus,
                                        self.connection.mask(f'{type(exc).__name__}: {exc}'))

    async def close(self) -> None:
        await self.tasks.cancel()
        for channel in (self.sub, self.publisher):
            await close_channel(channel)
        self.sub = self.publisher = self.deliveries = self.lane = None
        await self.connection.close()
        await self.publish_connection.close()


class AMQPSignalBus(AbstractSignalBus):
    """Signal bus on RabbitMQ (aiormq), so a deployment with only RabbitMQ has signals and RPC.

    Options: ``send_timeout`` (10 s, waiting for a lost connection included),
    ``connect_timeout`` (10), ``max_reconnect_delay`` (2), ``ssl_context``
    (buses sharing a DSN in one event loop share the first one's connection),
    ``fast_lane`` (True: through the fast lane where the installed aiormq
    fits it; False: plain aiormq; buses differing only in this share nothing).

    Not run: needs a RabbitMQ server.
    >>> bus = AMQPSignalBus('amqp://guest:guest@localhost:5672/', prefix='APP')  # doctest: +SKIP
    >>> await bus.user_created.send('users', user_id=1)                          # doctest: +SKIP
    """

    def __init__(self, dsn: str | Sequence[str], *, send_timeout: float = 10.0, connect_timeout: float = 10.0,
                 max_reconnect_delay: float = 2.0, ssl_context: ssl.SSLContext | None = None,
                 fast_lane: bool = True, **options: Any) -> None:
        dsn = dsn_of(dsn)
        super().__init__(dsn, **options)
        self.fast_lane = fast_lane
        self.send_timeout = send_timeout
        self.exchange = f'microagent.signals.{self.prefix}'
        # Built now to validate the DSN; a hub adopts it if none exists for this DSN yet.
        options = {'log': self.log, 'ssl_context': ssl_context, 'connect_timeout': connect_timeout,
                   'max_reconnect_delay': max_reconnect_delay, 'fast_lane': fast_lane, 'owner': type(self).__name__}
        self._own = RobustConnection(dsn, **options)
        self._own_publisher = RobustConnection(dsn, **options)
        self._bound: set[str] = set()
        self._attached: tuple[aiormq.abc.AbstractChannel, str, str] | None = None
        self._attach_lock = asyncio.Lock()

    def lease_options(self) -> dict[str, Any]:
        """The lease connects like this bus: same TLS context."""
        return {'ssl_context': self._own.ssl_context}

    @property
    def listening(self) -> bool:
        """Whether this bus has bound channels (and so a queue to restore after a reconnect)."""
        return bool(self._bound)

    @property
    def connection(self) -> RobustConnection:
        return self._hub().connection

    def _hub(self) -> _Hub:
        hubs = _HUBS.setdefault(asyncio.get_running_loop(), {})
        hub = hubs.get((self.dsn, self.fast_lane))
        if hub is None:
            hub = hubs[(self.dsn, self.fast_lane)] = _Hub(self._own, self._own_publisher)
        hub.members.add(self)
        return hub

    async def send(self, channel: str, message: str | bytes) -> None:
        """Publish to the prefix's exchange with routing key *channel* (at most once)."""
        body = message.encode() if isinstance(message, str) else message
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.send_timeout
        while True:
            hub = self._hub()
            try:
                await hub.publish(self.exchange, channel, body, max(0.001, deadline - loop.time()))
                return
            except (*CONNECTION_ERRORS, TimeoutError) as exc:
                if loop.time() >= deadline:
                    raise self._error(f'cannot send to {channel}', exc) from None
                await wait_closed(hub.publisher, deadline - loop.time())

    async def bind(self, channel: str) -> None:
        """Route *channel* to this bus's queue; returns once the binding is in place."""
        self._bound.add(channel)
        hub = self._hub()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hub.connection.connect_timeout * 2
        while True:
            hub = self._hub()
            sub, deliveries = await hub.subscription(deadline - loop.time())
            try:
                queue = await self.attach(sub, deliveries)
                await sub.queue_bind(queue, self.exchange, routing_key=channel,
                                     timeout=max(0.001, deadline - loop.time()))
                return
            except (*CONNECTION_ERRORS, TimeoutError) as exc:
                if loop.time() >= deadline:
                    raise self._error(f'cannot bind {channel}', exc) from None
                # The hub re-subscribes every bus and rebinds its channels, this one included.
                await wait_closed(sub, deadline - loop.time())

    async def attach(self, channel: aiormq.abc.AbstractChannel, deliveries: Deliveries | None) -> str:
        """Declare this bus's queue on *channel*, bind every bound channel, consume; the queue name."""
        async with self._attach_lock:
            if self._attached is not None and self._attached[0] is channel:
                return self._attached[1]
            timeout = self.connection.connect_timeout
            await channel.exchange_declare(self.exchange, exchange_type='topic', durable=True, timeout=timeout)
            ok = await channel.queue_declare('', exclusive=True, auto_delete=True, timeout=timeout)
            queue = str(ok.queue)
            for bound in tuple(self._bound):
                await channel.queue_bind(queue, self.exchange, routing_key=bound, timeout=timeout)
            tag = f'bus.{queue}'
            if deliveries is not None:
                # Registered before basic.consume: the lane hands over the very first signal.
                deliveries.consumers[tag] = self._on_incoming
            await channel.basic_consume(queue, self._on_message, no_ack=True, consumer_tag=tag, timeout=timeout)
            self._attached = (channel, queue, tag)
            return queue

    def connected(self) -> bool:
        attached = self._attached
        return not self._bound or (attached is not None and not attached[0].is_closed)

    def _on_incoming(self, incoming: Incoming) -> None:
        if incoming.routing_key:
            self.receiver(incoming.routing_key, incoming.body)

    async def _on_message(self, message: aiormq.abc.DeliveredMessage) -> None:
        """aiormq's consumer callback, for a signal that did not come through the lane."""
        self._on_incoming(Incoming.of(message))

    def _error(self, what: str, exc: BaseException) -> BackendError:
        return BackendError(self.connection.mask(f'{self!r}: {what}: {type(exc).__name__}: {exc}'))

    async def close(self) -> None:
        await super().close()
        self._bound.clear()
        hubs = _HUBS.get(asyncio.get_running_loop(), {})
        hub = hubs.get((self.dsn, self.fast_lane))
        attached, self._attached = self._attached, None
        if attached is not None and not attached[0].is_closed:
            # Cancelling the only consumer deletes the auto-delete queue.
            with contextlib.suppress(*CONNECTION_ERRORS, TimeoutError):
                await attached[0].basic_cancel(attached[2], timeout=5)
        if hub is None:
            return
        hub.members.discard(self)
        if not hub.members:
            hubs.pop((self.dsn, self.fast_lane), None)
            await hub.close()
