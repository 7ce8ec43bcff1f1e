"""Where the effects meet the delivery contract: a delivery's stable id, and a publish under a given id.

Everything the effects need from brokers and buses goes through these two
functions, so they work with every backend through the public contract.

Not run: needs PostgreSQL (and the backends of the broker and bus).
>>> delivery_id(delivery)                                   # doctest: +SKIP
'5f0c3f1e9b2a4c6d8e7f0a1b2c3d4e5f'
>>> await publish(broker, bus, staged, timeout=10)          # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from ..delivery import Delivery
    from ._outbox import Staged

__all__ = ['delivery_id', 'publish']


def delivery_id(delivery: Delivery) -> str:
    """The id of the message *delivery* carries: the same for every delivery of one send, retries included.

    The delivery contract (``microagent.broker``) gives every message an id at send (or the sender's
    ``message_id=``) and keeps it across redeliveries, retries and dead letters on every backend.
    """
    return delivery.message_id


async def publish(broker: Any, bus: Any, staged: Staged, timeout: float) -> None:
    """Publish one outbox row through *broker* (queues, exchanges) or *bus* (signals) within *timeout*."""
    kind, name = staged.kind, staged.name
    # The outbox row's id is the message's id (the contract keeps it across retries): a relay that publishes
    # a row twice publishes one message id twice, and the receiving inbox keeps one.
    headers = staged.headers or None
    async with asyncio.timeout(timeout):
        if kind == 'queue':
            await broker.send(name, staged.body, headers=headers, message_id=staged.message_id)
        elif kind == 'exchange':
            await broker.publish(name, staged.body, topic=staged.topic, headers=headers,
                                 message_id=staged.message_id)
        elif bus is None:
            raise ConfigurationError(f'outbox: signal {name!r} waits for a relay with a bus')
        else:
            await bus.send(bus.channel(name), staged.body)
