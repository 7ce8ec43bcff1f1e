"""AMQPBroker: RabbitMQ queues with publisher confirms, manual acks, delayed retries and DLQs.

Topology, declared idempotently and at most once per channel:

* ``<queue>``: durable, its dead-letter exchange routes rejects to ``<queue>.dlq``;
* ``<queue>.dlq``: durable; dead letters carry ``x-error`` and ``x-attempts``;
* ``<queue>.delay.<ms>``: durable, ``x-message-ttl`` = ms, dead-lettering back
  into ``<queue>`` (a retry waits there: a delay, not a hot requeue loop);
* an exchange named in a queue declaration: ``fanout`` when none of its queues
  has topics, else ``topic`` (queues without topics bound with ``#``).
"""
from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections.abc import Sequence
from typing import Any

import aiormq
import aiormq.abc
from pamqp.commands import Basic

from ..broker import AbstractQueueBroker
from ..delivery import ConsumerRunner, DeadLetter
from ..exceptions import BackendError, DeliveryError
from ._amqp_connection import CONNECTION_ERRORS, RobustConnection, close_channel, wait_closed
from ._amqp_delivery import ATTEMPT_HEADER, ERROR_HEADER, AMQPDelivery, ManualAckRunner
from ._amqp_topology import Topology, delay_ms

__all__ = ['AMQPBroker']

_FATAL = (aiormq.exceptions.ChannelPreconditionFailed, aiormq.exceptions.ChannelAccessRefused,
          aiormq.exceptions.ChannelNotFoundEntity)


class AMQPBroker(AbstractQueueBroker):
    """Queue broker on RabbitMQ (aiormq): confirms, ``mandatory``, persistent messages, durable queues.

    Options besides the common ones: ``publish_timeout`` (seconds a publisher
    waits for the connection and the confirm, 30), ``connect_timeout`` (10),
    ``max_reconnect_delay`` (5), ``ssl_context`` (for ``amqps://``; by default
    the server certificate is verified against the system CAs),
    ``queue_expires`` (seconds: RabbitMQ deletes queues unused that long; off).

    >>> broker = AMQPBroker('amqp://guest:guest@localhost:5672/')  # doctest: +SKIP
    >>> await broker.user_created.send({'user_id': 1})             # doctest: +SKIP
    >>> await broker.push.send({'text': 'hi'}, topic='push.ios')   # doctest: +SKIP
    """

    def __init__(self, dsn: str, *, publish_timeout: float = 30.0, connect_timeout: float = 10.0,
                 max_reconnect_delay: float = 5.0, ssl_context: ssl.SSLContext | None = None,
                 queue_expires: float | None = None, **options: Any) -> None:
        super().__init__(dsn, **options)
        self.publish_timeout = publish_timeout
        self.connection = RobustConnection(dsn, log=self.log, ssl_context=ssl_context,
                                           connect_timeout=connect_timeout,
                                           max_reconnect_delay=max_reconnect_delay)
        # Consumers get a connection of their own: the broker's flow control of a busy
        # publisher then never holds back acks, and confirms do not queue behind deliveries.
        self.consume_connection = RobustConnection(dsn, log=self.log, ssl_context=ssl_context,
                                                   connect_timeout=connect_timeout,
                                                   max_reconnect_delay=max_reconnect_delay)
        self._topology = Topology(self.catalog, queue_expires)
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._ops: aiormq.abc.AbstractChannel | None = None
        self._declared: set[str] = set()
        self._channel_lock = asyncio.Lock()
        self._consumer_channels: dict[str, aiormq.abc.AbstractChannel] = {}
        self._ids = itertools.count(1)
        self._ids_prefix = f'{self.uid[:12]}.'

    # -- publishing --------------------------------------------------------------

    def _properties(self, headers: dict[str, Any] | None) -> Basic.Properties:
        # Persistent, with a message id unique per broker: aiormq maps a basic.return
        # back to its publish by message id (and would draw a random UUID otherwise).
        return Basic.Properties(delivery_mode=2, headers=headers, message_id=f'{self._ids_prefix}{next(self._ids)}')

    async def send(self, name: str, message: str | bytes, **kwargs: Any) -> None:
        """Publish to queue *name* and wait for the broker's confirm; DeliveryError if unroutable.

        ``timeout`` (seconds, default ``publish_timeout``) bounds the whole call,
        the wait for a lost connection included. ``headers`` adds AMQP headers.
        """
        body = message.encode() if isinstance(message, str) else message
        await self._publish(name, body, timeout=kwargs.get('timeout'), headers=kwargs.get('headers'))

    async def publish(self, exchange: str, message: str | bytes, topic: str | None = None, **kwargs: Any) -> None:
        """Publish once to *exchange* with routing key *topic*; every bound queue that matches gets it."""
        self.catalog.route(exchange, topic)  # QueueNotFound for an undeclared exchange
        body = message.encode() if isinstance(message, str) else message
        await self._publish(f'exchange:{exchange}', body, exchange=exchange, key=topic or '',
                            timeout=kwargs.get('timeout'), headers=kwargs.get('headers'))

    async def send_many(self, name: str, messages: Sequence[str | bytes], **kwargs: Any) -> None:
        """Publish every message, then wait for all the confirms (a pipelined confirm window)."""
        timeout = kwargs.get('timeout') or self.publish_timeout
        bodies = [m.encode() if isinstance(m, str) else m for m in messages]
        channel = await self._ready(name, timeout)
        results = await asyncio.gather(
            *(channel.basic_publish(b, routing_key=name, properties=self._properties(None), mandatory=True,
                                    timeout=timeout) for b in bodies), return_exceptions=True)
        for body, result in zip(bodies, results, strict=True):
            if isinstance(result, CONNECTION_ERRORS) and not isinstance(result, aiormq.DeliveryError):
                # Lost with the connection: send again through the robust path (a duplicate at worst).
                await self._publish(name, body, timeout=timeout)
            elif isinstance(result, (BaseException, Basic.Nack)):
                self._check(result, name)

    async def _publish(self, target: str, body: bytes, *, exchange: str = '', key: str | None = None,
                       timeout: float | None = None, headers: dict[str, Any] | None = None) -> None:
        """Publish to *target* (a queue, or ``exchange:<name>`` with *exchange* and *key*), confirmed."""
        timeout = timeout or self.publish_timeout
        key = target if key is None else key
        started = time.monotonic()
        channel = self._channel
        if channel is None or channel.is_closed or target not in self._declared:
            channel = await self._ready(target, timeout)
        try:
            result: Any = await channel.basic_publish(body, exchange=exchange, routing_key=key, mandatory=True,
                                                      properties=self._properties(headers), timeout=timeout)
        except CONNECTION_ERRORS as exc:
            if isinstance(exc, (aiormq.DeliveryError, *_FATAL)):
                result = exc
            else:
                left = timeout - (time.monotonic() - started)
                await self._publish_again(target, body, exc, exchange=exchange, key=key, timeout=left,
                                          headers=headers)
                return
        except TimeoutError:
            raise BackendError(f'{self!r}: no confirm for {target} within {timeout}s') from None
        self._check(result, target)

    async def _publish_again(self, target: str, body: bytes, first: BaseException, *, exchange: str, key: str,
                             timeout: float, headers: dict[str, Any] | None) -> None:
        """The channel or connection died under a publish: wait for a new one, within *timeout*."""
        self.log.debug('%r: publish to %s interrupted (%s), retrying', self, target, type(first).__name__)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: BaseException = first
        while (left := deadline - loop.time()) > 0:
            try:
                channel = await self._ready(target, left)
                result = await channel.basic_publish(body, exchange=exchange, routing_key=key, mandatory=True,
                                                     properties=self._properties(headers), timeout=left)
            except (aiormq.DeliveryError, *_FATAL) as exc:
                self._check(exc, target)
            except (*CONNECTION_ERRORS, TimeoutError) as exc:
                last = exc
                await wait_closed(self._channel, deadline - loop.time())
                continue
            self._check(result, target)
            return
        reason = self.connection.mask(f'{type(last).__name__}: {last}')
        raise BackendError(f'{self!r}: cannot publish to {target} within {timeout:.1f}s ({reason})')

    def _check(self, result: Any, target: str) -> None:
        if isinstance(result, aiormq.exceptions.PublishError):
            text = getattr(result.frame, 'reply_text', 'unroutable')
            raise DeliveryError(f'{self!r}: message to {target} was returned by the broker ({text}); '
                                'no queue is bound for it')
        if isinstance(result, (aiormq.DeliveryError, Basic.Nack)):
            raise DeliveryError(f'{self!r}: the broker did not accept the message to {target} (nack)')
        if isinstance(result, _FATAL):
            raise BackendError(self.connection.mask(f'{self!r}: {target}: {type(result).__name__}: {result}'))
        if isinstance(result, BaseException):
            raise BackendError(self.connection.mask(f'{self!r}: {target}: {type(result).__name__}: {result}'))

    async def _ready(self, target: str, timeout: float) -> aiormq.abc.AbstractChannel:
        """The publish channel, with *target* (a queue or ``exchange:<name>``) declared on it."""
        try:
            async with asyncio.timeout(timeout):
                channel = await self._publish_channel(timeout)
                if target not in self._declared:
                    await self._topology.declare(channel, target, timeout)
                    self._declared.add(target)
        except _FATAL as exc:
            raise BackendError(self.connection.mask(f'{self!r}: cannot declare {target}: {exc}')) from None
        except TimeoutError:
            reason = f': {self.connection.last_error}' if self.connection.last_error else ''
            raise BackendError(f'{self!r}: not connected within {timeout}s ({target}){reason}') from None
        return channel

    async def _publish_channel(self, timeout: float) -> aiormq.abc.AbstractChannel:
        async with self._channel_lock:
            channel = self._channel
            if channel is None or channel.is_closed:
                connection = await self.connection.get(timeout)
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True,
                                                   timeout=timeout)
                self._channel = channel
                self._declared.clear()
            return channel

    async def publish_retry(self, queue: str, body: bytes, attempt: int, delay: float, error: str) -> None:
        """Publish the next attempt of a failed message; it reaches *queue* after *delay* seconds."""
        ms = delay_ms(delay)
        headers = {ATTEMPT_HEADER: attempt, ERROR_HEADER: error[:1000]}
        if ms <= 0:
            await self._publish(queue, body, headers=headers)
            return
        target = f'{queue}.delay.{ms}'
        # Declared before every use: that renews its x-expires, so it never expires with messages inside.
        self._declared.discard(target)
        await self._publish(target, body, headers=headers)

    async def publish_dead_letter(self, queue: str, body: bytes, error: str, attempts: int) -> None:
        """Publish a message to ``<queue>.dlq`` with its error and attempt count."""
        target = f'{queue}.dlq'
        headers = {ERROR_HEADER: error[:4000], 'x-attempts': attempts}
        await self._publish(target, body, headers=headers)

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
        except TimeoutError:
            reader = self._readers.pop(name, None)
            if reader is not None:
                reader.cancel()
            reason = f': {self.consume_connection.last_error}' if self.consume_connection.last_error else ''
            raise BackendError(f'{self!r}: cannot consume {name}{reason}') from None

    async def _consume(self, name: str, runner: ConsumerRunner, started: asyncio.Future[None]) -> None:
        delay = self.connection.reconnect_delay
        while runner.active:
            try:
                channel, feed = await self._subscribe(name, runner)
            except (*CONNECTION_ERRORS, BackendError, TimeoutError) as exc:
                self.log.warning('%r: cannot consume %s (%s); retrying in %.1fs', self, name,
                                 self.connection.mask(f'{type(exc).__name__}: {exc}'), delay)
                # Backoff between attempts, not synchronisation.
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.connection.max_reconnect_delay)
                continue
            delay = self.connection.reconnect_delay
            if not started.done():
                started.set_result(None)
            await self._pump(runner, channel, feed)
            self.log.warning('%r: consumer channel of %s closed; re-consuming', self, name)

    async def _subscribe(self, name: str, runner: ConsumerRunner) -> tuple[aiormq.abc.AbstractChannel, _Feed]:
        timeout = self.connection.connect_timeout
        connection = await self.consume_connection.get(None)
        channel = await connection.channel(publisher_confirms=False, timeout=timeout)
        try:
            await channel.basic_qos(prefetch_count=runner.max_inflight, timeout=timeout)
            await self._topology.declare(channel, name, timeout)
            feed = _Feed(self, name, runner)
            channel.closing.add_done_callback(lambda _: feed.inbox.put_nowait(None))
            await channel.basic_consume(name, feed.deliver, timeout=timeout)
        except BaseException:
            await close_channel(channel)
            raise
        self._consumer_channels[name] = channel
        return channel, feed

    async def _pump(self, runner: ConsumerRunner, channel: aiormq.abc.AbstractChannel, feed: _Feed) -> None:
        while runner.active:
            message = await feed.inbox.get()
            if message is None or channel.is_closed:
                return
            feed.held = True
            try:
                # Cancelled here, the held message is unacked: the broker redelivers it.
                await runner.wait_slots()
            finally:
                feed.held = False
            runner.submit(AMQPDelivery(self, feed.name, message, feed.auto))

    async def unbind(self, name: str, timeout: float | None = 30.0) -> int:
        cut = await super().unbind(name, timeout)
        channel = self._consumer_channels.pop(name, None)
        # Closing the channel requeues what was delivered to it and never settled.
        await close_channel(channel)
        return cut

    async def putout(self, amqp: Any) -> None:
        """Acknowledge a message an ``autoack=False`` handler got as ``amqp`` (reference API)."""
        await amqp.ack()

    # -- inspection ----------------------------------------------------------------

    async def queue_length(self, name: str, **options: Any) -> int:
        """Messages ready in *name* (passive ``queue.declare``); 0 for a queue that does not exist."""
        channel = await self._ops_channel()
        try:
            ok = await channel.queue_declare(name, passive=True, timeout=self.publish_timeout)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        except CONNECTION_ERRORS as exc:
            raise BackendError(self.connection.mask(f'{self!r}: queue_length({name}): {exc}')) from None
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
        for channel in (self._channel, self._ops):
            await close_channel(channel)
        self._channel = self._ops = None
        self._declared.clear()
        await self.connection.close()
        await self.consume_connection.close()


class _Feed:
    """Deliveries of one consumer channel on their way to the runner.

    A delivery goes straight to the runner when a slot is free and nothing is
    queued before it (no task switch on the hot path); otherwise it waits in
    ``inbox`` for the reader loop. ``None`` in the inbox: the channel closed.
    """

    __slots__ = ('auto', 'broker', 'held', 'inbox', 'name', 'runner')

    def __init__(self, broker: AMQPBroker, name: str, runner: ConsumerRunner) -> None:
        self.broker = broker
        self.name = name
        self.runner = runner
        self.auto = not isinstance(runner, ManualAckRunner)
        self.inbox: asyncio.Queue[aiormq.abc.DeliveredMessage | None] = asyncio.Queue()
        self.held = False

    async def deliver(self, message: aiormq.abc.DeliveredMessage) -> None:
        runner = self.runner
        if runner.active and runner.free_slots > 0 and not self.held and self.inbox.empty():
            # aiormq runs this callback in a task of its own: the handler runs right here.
            await runner.run_here(AMQPDelivery(self.broker, self.name, message, self.auto))
        else:
            self.inbox.put_nowait(message)


def _text(value: Any) -> str:
    return value.decode(errors='replace') if isinstance(value, bytes) else str(value)


def _dead_letter(message: aiormq.abc.DeliveredMessage) -> DeadLetter:
    headers: dict[str, Any] = dict(message.header.properties.headers or {})
    error = headers.get(ERROR_HEADER)
    if error is None:
        deaths: Any = headers.get('x-death') or [{}]
        error = f'dead-lettered by the broker: {_text(deaths[0].get("reason", "rejected"))}'
    try:
        attempts = int(headers.get('x-attempts', headers.get(ATTEMPT_HEADER, 1)))
    except (TypeError, ValueError):
        attempts = 1
    return DeadLetter(message.body.decode(errors='replace'), _text(error), attempts)
