"""RabbitMQ backends on aiormq: :class:`AMQPBroker` (queues) and :class:`AMQPSignalBus` (signals, RPC).

    from microagent.tools.amqp import AMQPBroker, AMQPSignalBus

    broker = AMQPBroker('amqp://guest:guest@localhost:5672/')
    await broker.user_created.send({'user_id': 1})
    await broker.push.send({'text': 'hi'}, topic='push.ios')    # a queue's exchange

    bus = AMQPSignalBus('amqp://guest:guest@localhost:5672/', prefix='APP')
    await bus.user_created.send('users', user_id=1)

``amqps://`` verifies the server certificate (system CAs, or ``?cafile=...``,
or an ``ssl_context``). Publishing waits for publisher confirms and is
``mandatory``: an unroutable message raises :class:`DeliveryError`. Consumers
ack after the handler returned; ``@consumer(queue, autoack=False)`` hands the
message to the handler as ``amqp`` (:class:`AMQPMessage`) to ack itself. Both
reconnect forever with capped backoff, re-declare and re-consume.
"""
from __future__ import annotations

from ._broker import AMQPBroker
from ._bus import AMQPSignalBus
from ._connection import RobustConnection
from ._delivery import AMQPMessage
from ._lease import AMQPLease

__all__ = ['AMQPBroker', 'AMQPLease', 'AMQPMessage', 'AMQPSignalBus', 'RobustConnection']
