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

A cluster: ``amqp://u:p@h1:5672,h2:5672,h3:5672/vhost`` (or a list of DSNs)
fails over to the next host when a connection is lost, and
``AMQPBroker(dsn, queue_type='quorum')`` (or ``queue_types={'mailer':
'quorum'}``) declares quorum queues, whose delivery count is the attempt
counter (docs/scaling.md, "RabbitMQ").
"""
from __future__ import annotations

from ._broker import AMQPBroker
from ._bus import AMQPSignalBus
from ._connection import RobustConnection
from ._delivery import AMQPMessage
from ._lease import AMQPLease

__all__ = ['AMQPBroker', 'AMQPLease', 'AMQPMessage', 'AMQPSignalBus', 'RobustConnection']
