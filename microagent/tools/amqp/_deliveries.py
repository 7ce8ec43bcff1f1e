"""Deliveries of one consuming channel, read off the lane and handed over as they complete.

A ``basic.deliver`` for a consumer tag registered here, its content header and
body frames are taken off the lane and assembled into an :class:`Incoming`,
which goes to that consumer's callback at once (in the protocol callback: the
callback must not block; it starts a task or queues the message). Deliveries
for other consumer tags reach aiormq as usual. Register the tag before
``basic.consume`` so that the first delivery already comes this way.

Settling writes ``basic.ack``/``basic.nack`` straight to the socket (see
``amqp._lane``); a message whose channel has closed cannot be settled any more
(the broker requeues it, flagged ``redelivered``).

Not run: needs a RabbitMQ server.
>>> deliveries = Deliveries(channel, lane)                   # doctest: +SKIP
>>> deliveries.consumers['mailer.1f3a'] = feed.accept        # doctest: +SKIP
>>> await channel.basic_consume('mailer', fallback, consumer_tag='mailer.1f3a')   # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiormq
from pamqp.commands import Basic

from . import _wire as wire

if TYPE_CHECKING:
    from ._lane import Lane

__all__ = ['SETTLE_TIMEOUT', 'Deliveries', 'Incoming']

# An ack or nack that cannot even be queued for the socket this long gives up: the message stays
# unsettled and the broker redelivers it once the (evidently dead) connection goes.
SETTLE_TIMEOUT = 30.0


class Incoming:
    """One delivered message: where it came from, its properties and body, and how to settle it."""

    __slots__ = ('body', 'channel', 'delivery_tag', 'exchange', 'lane', 'properties', 'redelivered', 'routing_key')

    def __init__(self, channel: aiormq.abc.AbstractChannel, lane: Lane | None, deliver: wire.Deliver,
                 properties: Basic.Properties, body: bytes) -> None:
        self.channel = channel
        self.lane = lane
        _, self.delivery_tag, self.redelivered, self.exchange, self.routing_key = deliver
        self.properties = properties
        self.body = body

    @classmethod
    def of(cls, message: aiormq.abc.DeliveredMessage) -> Incoming:
        """A message aiormq delivered itself (not through the lane)."""
        deliver = ('', message.delivery_tag or 0, bool(message.redelivered), message.exchange or '',
                   message.routing_key or '')
        return cls(message.channel, None, deliver, message.header.properties, message.body)

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})

    async def ack(self) -> None:
        """``basic.ack`` this message (ChannelInvalidStateError once its channel closed)."""
        channel = self._open_channel()
        lane = self.lane
        if lane is None:
            await channel.basic_ack(self.delivery_tag, wait=False)
            return
        await lane.send(wire.ack_frame(channel.number, self.delivery_tag), SETTLE_TIMEOUT)

    async def nack(self, requeue: bool) -> None:
        """``basic.nack`` this message: back to its queue, or to the queue's dead-letter exchange."""
        channel = self._open_channel()
        if self.lane is None:
            await channel.basic_nack(self.delivery_tag, requeue=requeue, wait=False)
            return
        await self.lane.send(wire.nack_frame(channel.number, self.delivery_tag, requeue), SETTLE_TIMEOUT)

    def _open_channel(self) -> aiormq.abc.AbstractChannel:
        if self.channel.is_closed:
            raise aiormq.ChannelInvalidStateError(f'AMQP channel {self.channel.number} is closed')
        return self.channel


class Deliveries:
    """The lane's sink for a consuming channel; see the module docstring."""

    def __init__(self, channel: aiormq.abc.AbstractChannel, lane: Lane) -> None:
        self.channel = channel
        self.lane = lane
        self.consumers: dict[str, Callable[[Incoming], None]] = {}
        # The delivery being assembled: its consumer, deliver fields, properties, body parts, bytes due.
        self._consumer: Callable[[Incoming], None] | None = None
        self._deliver: wire.Deliver = ('', 0, False, '', '')
        self._properties = Basic.Properties()
        self._parts: list[bytes] = []
        self._left = 0
        number = channel.number
        lane.attach(number, self)
        channel.closing.add_done_callback(lambda _: lane.detach(number, self))

    def take(self, kind: int, payload: bytes) -> bool:
        if kind == wire.METHOD:
            if wire.method_id(payload) != wire.DELIVER:
                return False
            deliver = wire.deliver(payload)
            self._consumer = self.consumers.get(deliver[0])
            if self._consumer is None:
                return False
            self._deliver = deliver
            return True
        if self._consumer is None:
            return False
        if kind == wire.HEADER:
            content = wire.header(payload)
            self._properties = content.properties
            self._parts = []
            self._left = content.body_size
        else:
            self._parts.append(payload)
            self._left -= len(payload)
        if self._left <= 0:
            self._complete()
        return True

    def _complete(self) -> None:
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b''.join(parts)
        incoming = Incoming(self.channel, self.lane, self._deliver, self._properties, body)
        consumer, self._consumer = self._consumer, None
        self._parts = []
        if consumer is not None:
            consumer(incoming)
