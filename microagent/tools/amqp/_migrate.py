"""Give a queue declared by microagent 1.9 (not durable, no arguments) this project's arguments.

The same moves a queue to the broker's ``queue_type`` (classic to quorum or
back): its dead-letter queue first, then the queue, each only where its
declaration differs.

RabbitMQ cannot change a queue's arguments: the queue is emptied into
``<queue>.migrating`` (durable), deleted, declared again with our arguments
(durable, dead-lettering to ``<queue>.dlq``) and refilled. Each message is
published with a confirm before it is acked at its source: a crash gives a
duplicate, never a loss, and running it again finishes the job (a left-over
``.migrating`` queue is emptied back first). No consumer may be attached to the
queue (it would be cancelled); a producer publishing during the few
milliseconds between delete and declare gets its message returned
(ours: ``DeliveryError``) or, without ``mandatory`` (1.9), dropped.

Not run: needs a RabbitMQ server.
>>> await broker.migrate_queue('mailer')   # doctest: +SKIP
12
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import aiormq
import aiormq.abc
from pamqp.commands import Basic

from ...exceptions import BackendError
from ._connection import close_channel

if TYPE_CHECKING:
    from ._broker import AMQPBroker

__all__ = ['migrate_queue']


async def migrate_queue(broker: AMQPBroker, name: str) -> int:
    """Move queue *name* (and its DLQ) to this project's arguments; how many messages the queue held."""
    timeout = broker.publish_timeout
    connection = await broker.connection.get(timeout)
    try:
        await _migrate(broker, connection, f'{name}.dlq')
        return await _migrate(broker, connection, name)
    except aiormq.exceptions.AMQPError as exc:
        raise BackendError(broker.connection.mask(f'{broker!r}: cannot migrate {name}: {exc}')) from None


async def _migrate(broker: AMQPBroker, connection: aiormq.abc.AbstractConnection, name: str) -> int:
    """Empty *name* into ``<name>.migrating``, declare it anew, refill it; how many messages it held."""
    timeout = broker.publish_timeout
    temp = f'{name}.migrating'
    moved = 0
    channel = await connection.channel(publisher_confirms=True, timeout=timeout)
    try:
        await channel.queue_declare(temp, durable=True, timeout=timeout)
        if await _legacy(broker, connection, name):
            consumers = (await channel.queue_declare(name, passive=True, timeout=timeout)).consumer_count
            if consumers:
                raise BackendError(f'{broker!r}: queue {name} has {consumers} consumer(s): stop them to migrate it')
            moved = await _move(channel, name, temp, timeout)
            await channel.queue_delete(name, if_empty=True, timeout=timeout)
    finally:
        await close_channel(channel)
    # A new channel: RabbitMQ 3.10's channel keeps the type of a queue it published to, and crashes
    # publishing to a queue of that name declared again with the other type.
    channel = await connection.channel(publisher_confirms=True, timeout=timeout)
    try:
        broker.forget(name)
        await broker.declare(channel, name, timeout)
        await _move(channel, temp, name, timeout)
        await channel.queue_delete(temp, if_empty=True, timeout=timeout)
    finally:
        await close_channel(channel)
    return moved


async def _legacy(broker: AMQPBroker, connection: aiormq.abc.AbstractConnection, name: str) -> bool:
    """Whether *name* exists with other arguments than ours (declaring ours fails: on a channel of its own)."""
    probe = await connection.channel(publisher_confirms=False, timeout=broker.publish_timeout)
    try:
        broker.forget(name)
        await broker.declare(probe, name, broker.publish_timeout)
    except aiormq.exceptions.ChannelPreconditionFailed:
        return True
    finally:
        await close_channel(probe)
    return False


async def _move(channel: aiormq.abc.AbstractChannel, source: str, target: str, timeout: float) -> int:
    """Every message of *source* to *target*: each confirmed there before it is acked here."""
    moved = 0
    while True:
        message = await channel.basic_get(source, timeout=timeout)
        if message.delivery_tag is None or isinstance(message.delivery, Basic.GetEmpty):
            return moved
        properties = message.header.properties
        properties.delivery_mode = 2
        await channel.basic_publish(message.body, routing_key=target, properties=properties, mandatory=True,
                                    timeout=timeout)
        await channel.basic_ack(message.delivery_tag)
        moved += 1
