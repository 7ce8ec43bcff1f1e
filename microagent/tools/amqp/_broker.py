"""AMQPBroker: RabbitMQ queues with publisher confirms, manual acks, delayed retries and DLQs.

Topology, declared idempotently and at most once per channel:

* ``<queue>``: durable, its dead-letter exchange routes rejects to ``<queue>.dlq``;
* ``<queue>.dlq``: durable; dead letters carry ``x-error`` and ``x-attempts``;
* ``<queue>.retry.<n>``: durable, dead-lettering back into ``<queue>``; the
  copy for attempt ``n + 1`` waits there until its ``expiration`` (a delay,
  not a hot requeue loop);
* an exchange named in a queue declaration: ``fanout`` when none of its queues
  has topics, else ``topic`` (queues without topics bound with ``#``).

The three queues of one queue share its type, ``classic`` (the default) or
``quorum`` (``queue_type``, ``queue_types``; see ``amqp._topology``).
"""
from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, ClassVar

import aiormq
import aiormq.abc
from pamqp.commands import Basic

from ..._backoff import Backoff
from ..._message import check_headers, check_message_id, message_ids_for, new_message_id, user_headers
from ...broker import AbstractQueueBroker
from ...delivery import ConsumerRunner, DeadLetter
from ...exceptions import BackendError, ConfigurationError, ConnectError, DeliveryError
from ...wire import MICROAGENT1, check_migration
from ._confirms import Publisher, publisher
from ._connection import CONNECTION_ERRORS, RobustConnection, close_channel, wait_closed
from ._deliveries import Deliveries
from ._delivery import ATTEMPT_HEADER, ATTEMPTS_HEADER, ERROR_HEADER, ManualAckRunner
from ._feed import Feed
from ._hosts import dsn_of
from ._migrate import migrate_queue
from ._topology import RETRY_QUEUE_EXPIRES, Topology, retry_queue

__all__ = ['AMQPBroker']

_NACK = 'nack'  # a publish's outcome when the broker refused it (Publisher.publish)
_FATAL = (aiormq.exceptions.ChannelPreconditionFailed, aiormq.exceptions.ChannelAccessRefused,
          aiormq.exceptions.ChannelNotFoundEntity)


class AMQPBroker(AbstractQueueBroker):
    """Queue broker on RabbitMQ (aiormq): confirms, ``mandatory``, persistent messages, durable queues.

    Options besides the common ones: ``publish_timeout`` (seconds a publisher
    waits for the connection and the confirm, 30), ``connect_timeout`` (10),
    ``max_reconnect_delay`` (2: a broker back after an outage is found
    within 2 s), ``ssl_context`` (for ``amqps://``; by default the server
    certificate is verified against the system CAs),
    ``queue_expires`` (seconds: RabbitMQ deletes queues unused that long; off),
    ``fast_lane`` (True: publishes, confirms, deliveries and acks take the
    fast lane, ``amqp._lane``, where the installed aiormq fits it; False:
    plain aiormq, same contract, slower),
    ``queue_type`` (``'classic'``, the default, or ``'quorum'``: the type of
    every queue this broker declares, its retry and dead-letter queues too)
    and ``queue_types`` (a mapping of queue name to type, for some queues
    only). On a quorum queue the broker's delivery count
    (``x-delivery-count``) adds to the attempt: a message whose consumer died
    comes back as its next attempt, and past ``max_attempts`` goes to the DLQ.
    A queue that exists with the other type is a ConfigurationError naming it.
    The DSN may name several nodes of a cluster,
    ``amqp://u:p@h1:5672,h2:5672/vhost`` (or a list of DSNs): a lost
    connection goes on through the next one.
    ``wire='microagent1'`` declares queues and exchanges as microagent 1.9 does
    (not durable, no arguments: no ``x-expires``, and a message an
    ``autoack=False`` handler rejects is dropped, not dead-lettered). A queue or
    exchange that exists with the other format's arguments is used as it is
    (a warning says so); ``migrate_queue`` gives a queue this project's.
    ``max_retry_delay`` must stay under 3000 s (retry queues expire an hour
    after their last use). A message RabbitMQ redelivers (its consumer died
    or lost its connection before settling it) counts as a failed attempt, so
    a message that kills every consumer ends in the DLQ (``amqp._feed``).

    Not run: needs a RabbitMQ server.
    >>> broker = AMQPBroker('amqp://guest:guest@localhost:5672/')  # doctest: +SKIP
    >>> await broker.user_created.send({'user_id': 1})             # doctest: +SKIP
    >>> await broker.push.send({'text': 'hi'}, topic='push.ios')   # doctest: +SKIP
    """

    send_options: ClassVar[frozenset[str]] = frozenset({'timeout'})

    def __init__(self, dsn: str | Sequence[str], *, publish_timeout: float = 30.0, connect_timeout: float = 10.0,
                 max_reconnect_delay: float = 2.0, ssl_context: ssl.SSLContext | None = None,
                 queue_expires: float | None = None, fast_lane: bool = True, queue_type: str = 'classic',
                 queue_types: Mapping[str, str] | None = None, **options: Any) -> None:
        dsn = dsn_of(dsn)
        super().__init__(dsn, **options)
        if self.max_retry_delay * 1.2 >= RETRY_QUEUE_EXPIRES:
            raise ConfigurationError(f'AMQP: max_retry_delay must be under {RETRY_QUEUE_EXPIRES / 1.2:.0f}s')
        self.publish_timeout = publish_timeout
        self.connection = RobustConnection(dsn, log=self.log, ssl_context=ssl_context,
                                           connect_timeout=connect_timeout,
                                           max_reconnect_delay=max_reconnect_delay, fast_lane=fast_lane,
                                           owner=type(self).__name__)
        # Consumers get a connection of their own: the broker's flow control of a busy
        # publisher then never holds back acks, and confirms do not queue behind deliveries.
        self.consume_connection = RobustConnection(dsn, log=self.log, ssl_context=ssl_context,
                                                   connect_timeout=connect_timeout,
                                                   max_reconnect_delay=max_reconnect_delay, fast_lane=fast_lane,
                                                   owner=type(self).__name__)
        self._topology = Topology(self.catalog, queue_expires, legacy=self.wire == MICROAGENT1,
                                  queue_type=queue_type, queue_types=queue_types)
        self._confirms: Publisher | None = None
        self._ops: aiormq.abc.AbstractChannel | None = None
        self._declared: set[str] = set()
        self._channel_lock = asyncio.Lock()
        # One inspection at a time: a 404 closes the shared channel under any other caller.
        self._ops_lock = asyncio.Lock()
        self._consumer_channels: dict[str, aiormq.abc.AbstractChannel] = {}
        self._feeds: dict[str, Feed] = {}
        self._ids = itertools.count(1)
        self._ids_prefix = f'{self.uid[:12]}.'

    def lease_options(self) -> dict[str, Any]:
        """The lease connects like this broker: same TLS context."""
        return {'ssl_context': self.connection.ssl_context}

    def is_quorum(self, name: str) -> bool:
        """Whether queue *name* (or the queue of retry or dead-letter queue *name*) is a quorum queue."""
        return self._topology.type_of(name) == 'quorum'

    # -- publishing --------------------------------------------------------------

    def send(self, name: str, message: str | bytes, *, headers: Mapping[str, str] | None = None,
             message_id: str | None = None, timeout: float | None = None, **options: Any) -> Coroutine[Any, Any, None]:
        """Publish to queue *name* and wait for the broker's confirm; DeliveryError if unroutable.

        ``timeout`` (seconds, default ``publish_timeout``) bounds the whole call,
        the wait for a lost connection included. *headers* become AMQP headers,
        *message_id* the ``message_id`` property.

        Not run: needs a RabbitMQ server.
        >>> await broker.send('mailer', '{"to": "a@b.c"}')   # doctest: +SKIP
        """
        if options:
            self.check_options('send', options)
        # Not a coroutine of its own: it returns _publish's, one frame less on the hot path.
        body = message.encode() if isinstance(message, str) else message
        properties = _properties(check_message_id(message_id) if message_id is not None else new_message_id(),
                                 check_headers(headers) or None)
        return self._publish(name, body, properties, timeout=timeout)

    async def publish(self, exchange: str, message: str | bytes, topic: str | None = None, *,
                      headers: Mapping[str, str] | None = None, message_id: str | None = None,
                      timeout: float | None = None, **options: Any) -> None:
        """Publish once to *exchange* with routing key *topic*; every bound queue that matches gets it."""
        if options:
            self.check_options('publish', options)
        self.catalog.route(exchange, topic)  # QueueNotFound for an undeclared exchange
        body = message.encode() if isinstance(message, str) else message
        properties = _properties(check_message_id(message_id) if message_id is not None else new_message_id(),
                                 check_headers(headers) or None)
        await self._publish(f'exchange:{exchange}', body, properties, exchange=exchange, key=topic or '',
                            timeout=timeout)

    async def send_many(self, name: str, messages: Sequence[str | bytes], *,
                        headers: Mapping[str, str] | None = None, message_ids: Sequence[str] | None = None,
                        timeout: float | None = None, **options: Any) -> None:
        """Publish every message in one write, then wait for all the confirms (a pipelined confirm window)."""
        if options:
            self.check_options('send_many', options)
        timeout = timeout or self.publish_timeout
        checked = check_headers(headers) or None
        items = [(m.encode() if isinstance(m, str) else m, _properties(message_id, checked))
                 for m, message_id in zip(messages, message_ids_for(messages, message_ids), strict=True)]
        deadline = time.monotonic() + timeout
        confirms = await self._ready(name, timeout)
        try:
            async with asyncio.timeout(max(0.001, deadline - time.monotonic())):
                results = await confirms.publish_many('', name, items)
        except TimeoutError:
            raise BackendError(f'{self!r}: no confirms for {name} within {timeout}s') from None
        except CONNECTION_ERRORS as exc:
            self._fatal(exc, name)
            results = [exc] * len(items)
        for (body, properties), result in zip(items, results, strict=True):
            if isinstance(result, BaseException) or result == _NACK:
                if isinstance(result, BaseException):
                    self._fatal(result, name)
                # Lost with the connection, or refused: send again through the robust path (a duplicate at worst).
                await self._publish(name, body, properties, timeout=max(0.001, deadline - time.monotonic()))
            else:
                self._check(result, name)

    async def _publish(self, target: str, body: bytes, properties: Basic.Properties, *, exchange: str = '',
                       key: str | None = None, timeout: float | None = None) -> None:
        """Publish to *target* (a queue, or ``exchange:<name>`` with *exchange* and *key*), confirmed."""
        timeout = timeout or self.publish_timeout
        key = target if key is None else key
        deadline = time.monotonic() + timeout
        try:
            refused = await self._publish_once(target, body, properties, exchange=exchange, key=key,
                                               deadline=deadline)
        except TimeoutError:
            raise BackendError(f'{self!r}: no confirm for {target} within {timeout}s') from None
        except CONNECTION_ERRORS as exc:
            self._fatal(exc, target)
            await self._publish_again(target, body, properties, exc, exchange=exchange, key=key, deadline=deadline)
            return
        if refused == _NACK:
            # A quorum queue refuses while it has no leader (an election after a node failure), and the
            # channel that saw it may go on refusing: publish again on a new channel.
            await self._renew_publish_channel()
            await self._publish_again(target, body, properties, DeliveryError(self._refusal(target)),
                                      exchange=exchange, key=key, deadline=deadline)
            return
        self._check(refused, target)

    async def _publish_once(self, target: str, body: bytes, properties: Basic.Properties, *, exchange: str,
                            key: str, deadline: float) -> str | None:
        """One confirmed publish on the current channel (declaring *target* first if needed); its outcome."""
        confirms = self._confirms
        if confirms is None or not confirms.is_open or target not in self._declared:
            confirms = await self._ready(target, max(0.001, deadline - time.monotonic()))
        async with asyncio.timeout(max(0.001, deadline - time.monotonic())):
            return await confirms.publish(exchange, key, body, properties)

    async def _publish_again(self, target: str, body: bytes, properties: Basic.Properties, first: BaseException, *,
                             exchange: str, key: str, deadline: float) -> None:
        """The channel or connection died under a publish, or the broker refused it: again until *deadline*."""
        self.log.debug('%r: publish to %s interrupted (%s), retrying', self, target, type(first).__name__)
        last: BaseException = first
        backoff = Backoff(self.connection.reconnect_delay, self.connection.max_reconnect_delay)
        while deadline > time.monotonic():
            try:
                refused = await self._publish_once(target, body, properties, exchange=exchange, key=key,
                                                   deadline=deadline)
            except (*CONNECTION_ERRORS, TimeoutError) as exc:
                self._fatal(exc, target)
                last = exc
                await wait_closed(self._confirms.channel if self._confirms else None, deadline - time.monotonic())
                continue
            if refused == _NACK:
                last = DeliveryError(self._refusal(target))
                await self._renew_publish_channel()
                # Backoff between attempts, not synchronisation: an election has nothing to wait on here.
                await asyncio.sleep(min(backoff.next(), max(0.0, deadline - time.monotonic())))
                continue
            self._check(refused, target)
            return
        reason = self.connection.mask(f'{type(last).__name__}: {last}')
        raise BackendError(f'{self!r}: cannot publish to {target} before its deadline ({reason})')

    def _check(self, refused: str | None, target: str) -> None:
        """Raise DeliveryError for a publish the broker returned (unroutable) or nacked."""
        if refused is None:
            return
        if refused.startswith('returned'):
            text = refused.partition(': ')[2] or 'unroutable'
            raise DeliveryError(f'{self!r}: message to {target} was returned by the broker ({text}); '
                                'no queue is bound for it')
        raise DeliveryError(self._refusal(target))

    async def _renew_publish_channel(self) -> None:
        """Close the publish channel (its publishes in flight are sent again): the next publish opens one."""
        async with self._channel_lock:
            confirms, self._confirms = self._confirms, None
        if confirms is not None:
            await close_channel(confirms.channel)

    def _refusal(self, target: str) -> str:
        return f'{self!r}: the broker did not accept the message to {target} (nack)'

    def _adopt(self, exc: BaseException) -> bool:
        """A queue or exchange exists with the other format's arguments: use it as it is from now on."""
        if not isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
            return False
        name = self._topology.adopt(exc)
        if name is None:
            return False
        other = 'this project (durable)' if self.wire == MICROAGENT1 else 'microagent 1.9 (not durable)'
        self.log.warning('%r: %s was declared by %s: using it as it is (see docs/migrating.md, migrate-queue)',
                         self, name, other)
        return True

    def _fatal(self, exc: BaseException, target: str) -> None:
        """Raise BackendError for errors retrying cannot cure (a missing exchange, access refused)."""
        if isinstance(exc, _FATAL):
            raise BackendError(self.connection.mask(f'{self!r}: {target}: {type(exc).__name__}: {exc}')) from None

    async def _ready(self, target: str, timeout: float) -> Publisher:
        """The publish channel, with *target* (a queue or ``exchange:<name>``) declared on it."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    confirms = await self._publish_channel(timeout)
                    if target in self._declared:
                        break
                    try:
                        await self._topology.declare(confirms.channel, target, timeout)
                    except _FATAL as exc:
                        if not self._adopt(exc):  # adopted: declared again (on a new channel: this one is closed)
                            raise
                        continue
                    self._declared.add(target)
        except _FATAL as exc:
            raise BackendError(self.connection.mask(f'{self!r}: cannot declare {target}: {exc}')) from None
        except TimeoutError:
            reason = f': {self.connection.last_error}' if self.connection.last_error else ''
            raise BackendError(f'{self!r}: not connected within {timeout}s ({target}){reason}') from None
        return confirms

    async def _publish_channel(self, timeout: float) -> Publisher:
        async with self._channel_lock:
            confirms = self._confirms
            if confirms is None or not confirms.is_open:
                channel, lane = await self.connection.channel(timeout, publisher_confirms=True)
                self._confirms = confirms = publisher(channel, lane)
                self._declared.clear()
            return confirms

    async def publish_retry(self, queue: str, body: bytes, attempt: int, delay: float, error: str, *,
                            message_id: str, headers: Mapping[str, str]) -> None:
        """Publish attempt *attempt* of a failed message; it reaches *queue* after *delay* seconds.

        Not run: needs a RabbitMQ server.
        >>> await broker.publish_retry('mailer', b'{}', 2, 1.0, 'x', message_id='c0', headers={})  # doctest: +SKIP
        """
        ms = round(delay * 1000)
        table = {**headers, ATTEMPT_HEADER: attempt, ERROR_HEADER: error[:1000]}
        if ms <= 0:
            await self._publish(queue, body, _properties(message_id, table))
            return
        target = retry_queue(queue, max(1, attempt - 1))
        # Declared before every use: that renews its x-expires, so it never expires with messages inside.
        self._declared.discard(target)
        await self._publish(target, body, _properties(message_id, table, str(ms)))

    async def publish_back(self, queue: str, body: bytes, message_id: str, headers: Mapping[str, Any]) -> None:
        """Give a message back to *queue* unchanged (shutdown; a short wait: the process is stopping).

        Not run: needs a RabbitMQ server.
        >>> await broker.publish_back('mailer', b'{}', 'c0ffee', {'x-attempt': 2})   # doctest: +SKIP
        """
        await self._publish(queue, body, _properties(message_id, dict(headers) or None),
                            timeout=min(self.publish_timeout, 5.0))

    async def publish_dead_letter(self, queue: str, body: bytes, error: str, attempts: int, *, message_id: str,
                                  headers: Mapping[str, str]) -> None:
        """Publish a message to ``<queue>.dlq`` with its error and attempt count."""
        table = {**headers, ERROR_HEADER: error[:4000], ATTEMPTS_HEADER: attempts}
        await self._publish(f'{queue}.dlq', body, _properties(message_id, table))

    # -- consuming -----------------------------------------------------------------

    async def bind(self, name: str) -> None:
        runner = self._runners[name]
        if not runner.consumer.options.get('autoack', True):
            runner = self._runners[name] = ManualAckRunner(self, runner.consumer)
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._start_reader(name, self._consume(name, runner, started))
        try:
            async with asyncio.timeout(self.connection.connect_timeout * 2):
                await asyncio.shield(started)
        except ConnectError:
            self._readers.pop(name, None)
            raise
        except TimeoutError:
            reader = self._readers.pop(name, None)
            if reader is not None:
                reader.cancel()
            reason = f': {self.consume_connection.last_error}' if self.consume_connection.last_error else ''
            raise BackendError(f'{self!r}: cannot consume {name}{reason}') from None

    async def _consume(self, name: str, runner: ConsumerRunner, started: asyncio.Future[None]) -> None:
        backoff = Backoff(self.connection.reconnect_delay, self.connection.max_reconnect_delay)
        while runner.active:
            try:
                channel, feed = await self._subscribe(name, runner)
            except (*CONNECTION_ERRORS, BackendError, TimeoutError) as exc:
                if isinstance(exc, ConnectError) and not started.done():
                    started.set_exception(exc)  # a refused login, an unknown host: bind raises it
                    return
                try:
                    if self._adopt(exc):
                        continue  # on a new channel, at once
                except ConfigurationError as wrong:  # a queue of the other type: retrying cannot cure it
                    if not started.done():
                        started.set_exception(wrong)
                    self.log.error('%r: cannot consume %s: %s', self, name, wrong)
                    return
                delay = backoff.next()
                self.log.warning('%r: cannot consume %s (%s); retrying in %.1fs', self, name,
                                 self.connection.mask(f'{type(exc).__name__}: {exc}'), delay)
                # Backoff between attempts, not synchronisation.
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            if not started.done():
                started.set_result(None)
            await self._pump(runner, channel, feed)
            self.log.warning('%r: consumer channel of %s closed; re-consuming', self, name)

    async def _subscribe(self, name: str, runner: ConsumerRunner) -> tuple[aiormq.abc.AbstractChannel, Feed]:
        timeout = self.connection.connect_timeout
        await self.consume_connection.get(None)
        channel, lane = await self.consume_connection.channel(timeout)
        try:
            await channel.basic_qos(prefetch_count=runner.max_inflight + runner.prefetch, timeout=timeout)
            await self._topology.declare(channel, name, timeout)
            feed = Feed(self, name, runner, quorum=self.is_quorum(name))
            channel.closing.add_done_callback(lambda _: feed.inbox.put_nowait(None))
            # The tag is known before basic.consume, so the lane takes the very first delivery.
            feed.tag = f'{name}.{self._ids_prefix}{next(self._ids)}'
            if lane is not None:
                Deliveries(channel, lane).consumers[feed.tag] = feed.accept
            await channel.basic_consume(name, feed.fallback, consumer_tag=feed.tag, timeout=timeout)
        except BaseException:
            await close_channel(channel)
            raise
        self._consumer_channels[name] = channel
        self._feeds[name] = feed
        return channel, feed

    async def _pump(self, runner: ConsumerRunner, channel: aiormq.abc.AbstractChannel, feed: Feed) -> None:
        while runner.active:
            incoming = await feed.inbox.get()
            if incoming is None or channel.is_closed:
                return
            delivery = feed.delivery(incoming)
            if delivery.redelivered and feed.auto and await feed.count_lost_attempt(delivery):
                continue
            # Cancelled while it waits for a slot, the held message is given back by unbind.
            feed.held = incoming
            await runner.wait_slots()
            feed.held = None
            runner.submit(delivery)

    def consuming(self, name: str) -> bool:
        channel = self._consumer_channels.get(name)
        return channel is not None and not channel.is_closed and name in self._runners

    async def unbind(self, name: str, timeout: float | None = 30.0) -> int:
        cut = await super().unbind(name, timeout)
        channel = self._consumer_channels.pop(name, None)
        self._feeds.pop(name, None)
        # Closing the channel requeues whatever is still delivered to it and never settled.
        await close_channel(channel)
        return cut

    async def _give_back_unstarted(self, name: str) -> None:
        # Before the running handlers are awaited: what waits in the feed goes to another consumer now.
        channel, feed = self._consumer_channels.get(name), self._feeds.get(name)
        if feed is not None and channel is not None and not channel.is_closed:
            await feed.give_back(channel)

    async def migrate_queue(self, name: str) -> int:
        """Give queue *name*, declared by microagent 1.9, this project's arguments; how many messages it held.

        Durable, dead-lettering to ``<name>.dlq``; nothing is lost (see ``amqp._migrate``). No consumer
        may be attached to it meanwhile.

        Not run: needs a RabbitMQ server.
        >>> await broker.migrate_queue('mailer')   # doctest: +SKIP
        3
        """
        self.catalog.queue(name)  # QueueNotFound for an undeclared queue
        check_migration(repr(self), self.wire)
        return await migrate_queue(self, name)

    def forget(self, name: str) -> None:
        """Declare queue *name* with this broker's arguments again next time (after a migration)."""
        self._topology.adopted.discard(name)
        self._declared.discard(name)

    async def declare(self, channel: aiormq.abc.AbstractChannel, name: str, timeout: float) -> None:
        """Declare queue *name* (its DLQ and exchange) on *channel* as this broker does before using it."""
        await self._topology.declare(channel, name, timeout)

    async def putout(self, amqp: Any) -> None:
        """Acknowledge a message an ``autoack=False`` handler got as ``amqp`` (reference API)."""
        await amqp.ack()

    # -- inspection ----------------------------------------------------------------

    async def queue_length(self, name: str, **options: Any) -> int:
        """Messages ready in *name* and waiting in its retry queues; 0 for a queue that does not exist.

        Passive ``queue.declare`` of ``name``, ``name.retry.1``, ``.retry.2``...
        up to the first retry queue that does not exist: a copy reaches retry
        queue ``n + 1`` only through ``n``, declared (renewing its hour-long
        expiry) on the way.

        Not run: needs a RabbitMQ server.
        >>> await broker.queue_length('mailer')   # doctest: +SKIP
        3
        """
        async with self._ops_lock:
            total = await self._ready_count(name)
            retry = 1
            while total is not None and (count := await self._ready_count(retry_queue(name, retry))) is not None:
                total += count
                retry += 1
        return total or 0

    async def _ready_count(self, queue: str) -> int | None:
        """Messages ready in *queue*, None when it does not exist."""
        channel = await self._ops_channel()
        try:
            ok = await channel.queue_declare(queue, passive=True, timeout=self.publish_timeout)
        except aiormq.exceptions.ChannelNotFoundEntity:
            # The broker closed the channel with its 404: the next call opens a new one.
            self._ops = None
            return None
        except CONNECTION_ERRORS as exc:
            raise BackendError(self.connection.mask(f'{self!r}: queue_length({queue}): {exc}')) from None
        return int(ok.message_count or 0)

    async def dead_letters(self, name: str, limit: int = 100) -> list[DeadLetter]:
        """Up to *limit* messages of ``<name>.dlq`` (read, then requeued in order by closing the channel)."""
        connection = await self.connection.get(self.publish_timeout)
        channel = await connection.channel(publisher_confirms=False, timeout=self.publish_timeout)
        letters: list[DeadLetter] = []
        try:
            for _ in range(limit):
                message = await channel.basic_get(f'{name}.dlq', timeout=self.publish_timeout)
                if message.delivery_tag is None or isinstance(message.delivery, Basic.GetEmpty):
                    break
                letters.append(_dead_letter(message))
        except aiormq.exceptions.ChannelNotFoundEntity:
            return letters
        finally:
            await close_channel(channel)
        return letters

    async def _ops_channel(self) -> aiormq.abc.AbstractChannel:
        channel = self._ops
        if channel is None or channel.is_closed:
            connection = await self.connection.get(self.publish_timeout)
            channel = self._ops = await connection.channel(publisher_confirms=False, timeout=self.publish_timeout)
        return channel

    async def close(self) -> None:
        await super().close()
        for channel in (self._confirms.channel if self._confirms else None, self._ops):
            await close_channel(channel)
        self._confirms = self._ops = None
        self._declared.clear()
        await self.connection.close()
        await self.consume_connection.close()


def _properties(message_id: str, headers: dict[str, Any] | None, expiration: str | None = None) -> Basic.Properties:
    # Persistent, with the message's id: a basic.return names the message it returns by its id
    # (Confirms maps it back to its publish).
    return Basic.Properties(delivery_mode=2, headers=headers, expiration=expiration, message_id=message_id)


def _text(value: Any) -> str:
    return value.decode(errors='replace') if isinstance(value, bytes) else str(value)


def _dead_letter(message: aiormq.abc.DeliveredMessage) -> DeadLetter:
    properties = message.header.properties
    headers: dict[str, Any] = dict(properties.headers or {})
    error = headers.get(ERROR_HEADER)
    if error is None:
        deaths: Any = headers.get('x-death') or [{}]
        error = f'dead-lettered by the broker: {_text(deaths[0].get("reason", "rejected"))}'
    try:
        attempts = int(headers.get(ATTEMPTS_HEADER, headers.get(ATTEMPT_HEADER, 1)))
    except (TypeError, ValueError):
        attempts = 1
    return DeadLetter(message.body.decode(errors='replace'), _text(error), attempts,
                      str(properties.message_id or ''), user_headers(headers))
