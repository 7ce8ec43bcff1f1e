"""AMQP deliveries: manual acks, delayed retries, dead letters, and ``autoack=False`` consumers.

A message is acknowledged (``basic.ack``) only after its handler returned. A
retry publishes a new copy (``attempt + 1`` in the ``x-attempt`` header) to a
retry queue with confirm, then acks this one: a crash in between gives a
duplicate, never a loss. ``release()`` (shutdown) republishes the message
unchanged and acks it: requeued, it would come back flagged ``redelivered``,
which counts as an attempt that died (see ``amqp._feed``).

On a quorum queue RabbitMQ counts the deliveries that ended without an ack
(``x-delivery-count``, on redelivered messages): the attempt is
``x-attempt`` plus that count, and a copy this process writes (retry,
shutdown) carries the attempt in ``x-attempt`` and starts a new count.

With ``@consumer(queue, autoack=False)`` the handler acks itself, as in the
reference implementation: it gets the message as the ``amqp`` keyword::

    @consumer(queues.mailer, autoack=False)
    async def handle(self, amqp: AMQPMessage, **data):
        ...
        await amqp.ack()            # or: await self.broker.putout(amqp)
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..._message import NO_HEADERS, user_headers
from ...delivery import ConsumerRunner, Delivery

if TYPE_CHECKING:
    from ...broker import AbstractQueueBroker, Consumer
    from ._deliveries import Incoming

__all__ = ['ATTEMPTS_HEADER', 'ATTEMPT_HEADER', 'DELIVERY_COUNT_HEADER', 'ERROR_HEADER', 'AMQPMessage',
           'ManualAckRunner', 'Republisher', 'attempt_of']

ATTEMPT_HEADER = 'x-attempt'    # the attempt a copy is for (retries)
ATTEMPTS_HEADER = 'x-attempts'  # the attempts a dead letter had
ERROR_HEADER = 'x-error'
DELIVERY_COUNT_HEADER = 'x-delivery-count'  # a quorum queue's count of unacked deliveries of a message


class Republisher(Protocol):
    """Where a delivery goes when it is not simply acked: the publishing side of the broker.

    Deliveries and feeds depend on this, not on the broker class: the broker
    creates them and hands itself over as one (``AMQPBroker`` implements it),
    so the calls go one way in the code (broker -> feed -> delivery -> here).
    """

    log: logging.Logger

    async def publish_retry(self, queue: str, body: bytes, attempt: int, delay: float, error: str, *,
                            message_id: str, headers: Mapping[str, str]) -> None:
        """Publish attempt *attempt* of a failed message; it reaches *queue* after *delay* seconds."""

    async def publish_back(self, queue: str, body: bytes, message_id: str, headers: Mapping[str, Any]) -> None:
        """Give a message back to *queue* unchanged."""

    async def publish_dead_letter(self, queue: str, body: bytes, error: str, attempts: int, *, message_id: str,
                                  headers: Mapping[str, str]) -> None:
        """Publish a message to ``<queue>.dlq`` with its error and attempt count."""


def attempt_of(headers: dict[str, Any] | None, *, counted: bool = False) -> int:
    """The attempt number carried by a message's headers (1 when absent or malformed).

    *counted*: plus the quorum queue's count of deliveries that ended unacked (``x-delivery-count``).

    >>> attempt_of({'x-attempt': 2, 'x-delivery-count': 1}, counted=True)
    3
    """
    if not headers:
        return 1
    value = headers.get(ATTEMPT_HEADER, 1)
    try:
        attempt = max(1, int(value))
    except (TypeError, ValueError):
        attempt = 1
    if counted:
        with contextlib.suppress(TypeError, ValueError):
            attempt += max(0, int(headers.get(DELIVERY_COUNT_HEADER, 0)))
    return attempt


class AMQPMessage:
    """One received AMQP message as an ``autoack=False`` handler sees it (keyword ``amqp``).

    >>> await amqp.ack()                # in an autoack=False handler  # doctest: +SKIP
    >>> await amqp.nack(requeue=False)  # to the queue's dead-letter exchange  # doctest: +SKIP
    """

    __slots__ = ('_delivery', 'body', 'channel', 'delivery_tag', 'headers', 'queue', 'redelivered')

    def __init__(self, delivery: AMQPDelivery) -> None:
        self._delivery = delivery
        self.queue = delivery.queue
        self.channel = delivery.channel
        self.delivery_tag = delivery.delivery_tag
        self.body = delivery.body
        self.headers = delivery.amqp_headers  # the whole AMQP table, as the reference API gave it
        self.redelivered = delivery.redelivered

    def __repr__(self) -> str:
        return f'<AMQPMessage {self.queue} tag={self.delivery_tag} attempt={self._delivery.attempt}>'

    @property
    def acked(self) -> bool:
        """Whether this message was settled (acked, nacked or moved on)."""
        return self._delivery.settled

    async def ack(self) -> None:
        """Acknowledge the message (once; later calls do nothing)."""
        await self._delivery.settle_ack()

    async def nack(self, requeue: bool = True) -> None:
        """Reject the message: back to the queue, or (``requeue=False``) to ``<queue>.dlq``."""
        await self._delivery.settle_nack(requeue)


class AMQPDelivery(Delivery):
    """A message read from an AMQP queue on one consumer channel."""

    __slots__ = ('amqp_headers', 'auto', 'broker', 'channel', 'delivery_tag', 'incoming', 'queue', 'quorum',
                 'redelivered', 'settled')

    def __init__(self, broker: Republisher, queue: str, incoming: Incoming, auto: bool = True,
                 quorum: bool = False) -> None:
        properties = incoming.properties
        headers = properties.headers or {}
        # Only a redelivered message has a count: the first delivery reads one header.
        attempt = attempt_of(headers, counted=quorum and incoming.redelivered)
        super().__init__(incoming.body, attempt, str(incoming.delivery_tag),
                         str(properties.message_id or ''), user_headers(headers) if headers else NO_HEADERS)
        self.broker = broker
        self.queue = queue
        self.incoming = incoming
        self.channel = incoming.channel
        self.delivery_tag = incoming.delivery_tag
        self.amqp_headers = headers
        self.redelivered = incoming.redelivered
        self.auto = auto
        self.quorum = quorum
        self.settled = False

    async def settle_ack(self) -> None:
        if not self.settled:
            self.settled = True
            # Written at once, not awaited to the socket: an ack lost with the connection means a redelivery.
            await self.incoming.ack()

    async def settle_nack(self, requeue: bool) -> None:
        if not self.settled:
            self.settled = True
            await self.incoming.nack(requeue)

    async def ack(self) -> None:
        # autoack=False: the handler acks itself (or leaves it for redelivery).
        if self.auto:
            await self.settle_ack()

    async def retry(self, delay: float, error: str) -> None:
        await self._move(self.broker.publish_retry(self.queue, self._bytes(), self.attempt + 1, delay, error,
                                                   message_id=self.message_id, headers=self.headers))

    async def dead_letter(self, error: str) -> None:
        await self._move(self.broker.publish_dead_letter(self.queue, self._bytes(), error, self.attempt,
                                                         message_id=self.message_id, headers=self.headers))

    async def _move(self, publish: Coroutine[Any, Any, None]) -> None:
        try:
            await publish
        except BaseException:
            # Publishing runs on another connection than this channel: if it failed, give the
            # message back now rather than leave it unacked for as long as this channel lives.
            with contextlib.suppress(Exception):
                await self.settle_nack(requeue=True)
            raise
        await self.settle_ack()

    async def release(self) -> None:
        if not self.auto or (self.redelivered and not self.quorum):
            # Requeued as it is: its handler acks it (autoack=False), or its lost attempt is still to count.
            await self.settle_nack(requeue=True)
            return
        headers = self.amqp_headers
        if self.redelivered:
            # A quorum queue counted the lost attempts into self.attempt: the copy carries them as its own.
            headers = {**{k: v for k, v in headers.items() if k != DELIVERY_COUNT_HEADER},
                       ATTEMPT_HEADER: self.attempt}
        await self._move(self.broker.publish_back(self.queue, self._bytes(), self.message_id, headers))

    def _bytes(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else self.body.encode()

    def raw(self) -> dict[str, Any]:
        """``amqp``: this message as :class:`AMQPMessage`, for handlers with an ``amqp`` parameter."""
        return {'amqp': AMQPMessage(self)}


class ManualAckRunner(ConsumerRunner):
    """The runner of an ``autoack=False`` consumer: the handler gets ``amqp`` and acks itself."""

    def __init__(self, broker: AbstractQueueBroker, consumer: Consumer) -> None:
        super().__init__(broker, consumer)
        accepts = self._accepts
        # The handler's signature is checked as if ``amqp`` were part of the message.
        self._accepts = lambda data: accepts({**data, 'amqp': None})

    def _decode(self, delivery: Delivery) -> tuple[dict[str, Any], str | None]:
        data, problem = super()._decode(delivery)
        if problem is None and isinstance(delivery, AMQPDelivery):
            data['amqp'] = AMQPMessage(delivery)
        return data, problem
