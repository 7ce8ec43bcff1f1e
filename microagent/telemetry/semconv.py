"""Attribute names and values of the OpenTelemetry messaging semantic conventions we use.

Span names are ``'<operation> <destination>'`` (``send mailer``,
``process mailer``, ``settle mailer``), as the conventions ask; what is ours
alone is under ``microagent.``.

>>> system_of('amqps://guest:secret@host/')
'rabbitmq'
>>> system_of('memory://')
'memory'
"""
from __future__ import annotations

__all__ = ['ATTEMPT', 'BATCH_COUNT', 'BODY_SIZE', 'CONSUMER_GROUP', 'DESTINATION', 'ERROR_TYPE', 'HANDLER',
           'MESSAGE_ID', 'OPERATION_NAME', 'OPERATION_TYPE', 'RPC', 'SCHEDULE', 'SYSTEM', 'TICK', 'system_of']

SYSTEM = 'messaging.system'
OPERATION_TYPE = 'messaging.operation.type'  # create, send, receive, process, settle
OPERATION_NAME = 'messaging.operation.name'
DESTINATION = 'messaging.destination.name'
MESSAGE_ID = 'messaging.message.id'
CONSUMER_GROUP = 'messaging.consumer.group.name'
BATCH_COUNT = 'messaging.batch.message_count'
BODY_SIZE = 'messaging.message.body.size'
ERROR_TYPE = 'error.type'
ATTEMPT = 'microagent.attempt'
HANDLER = 'microagent.handler'
RPC = 'microagent.rpc'
SCHEDULE = 'microagent.schedule'
TICK = 'microagent.tick'

# DSN schemes and the messaging.system value the conventions give them (others: the scheme itself).
_SYSTEMS = {'amqp': 'rabbitmq', 'amqps': 'rabbitmq', 'kafka': 'kafka', 'redis': 'redis', 'rediss': 'redis',
            'redis+cluster': 'redis', 'rediss+cluster': 'redis', 'nats': 'nats', 'tls': 'nats', 'memory': 'memory'}


def system_of(dsn: str) -> str:
    """``messaging.system`` for a backend's DSN (never the DSN itself: it may hold a password)."""
    scheme = dsn.split(':', 1)[0].lower() if ':' in dsn else 'unknown'
    return _SYSTEMS.get(scheme, scheme)
