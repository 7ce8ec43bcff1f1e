"""Wire details of the NATS broker: stream, subject and consumer names, their configs, the headers.

Queue ``q`` under prefix ``p`` (default ``microagent``):

* stream ``p_q`` (work-queue retention, file storage) on the one subject
  ``p.q``: an acknowledged message is deleted, so the stream holds exactly
  what waits, waits for a retry or is being handled;
* durable pull consumer ``q`` on it, shared by every consumer of the queue
  (replicas compete for messages; a work-queue stream allows one consumer per
  subject, which is what a queue is);
* stream ``p_q-dlq`` (limits retention) on ``p.q.dlq``: the dead letters,
  with the headers ``x-error`` and ``x-attempts``.

Headers of a queued message: ``x-message-id`` (the message's stable id,
the same on every copy and dead letter), ``Nats-Msg-Id`` (JetStream's
de-duplication id of one publish: a publish retried after a lost PubAck is
stored once), ``x-attempt`` (attempts made before this copy was stored: a
copy given back at shutdown keeps its count; absent: 0) and the caller's
headers, carried to retries, copies and dead letters unchanged. Dead letters
add ``x-error`` and ``x-attempts``. The ``x-`` names are the ones every
backend reserves (``microagent._message.RESERVED_HEADERS``); caller headers
named ``Nats-*`` are refused, since the server acts on them.
"""
from __future__ import annotations

from collections.abc import Mapping

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from ..._message import user_headers
from ...exceptions import ConfigurationError
from ._connection import subject_token

__all__ = ['ATTEMPT_BASE', 'ATTEMPTS', 'ERROR', 'MESSAGE_ID', 'MSG_ID', 'NATS_PREFIX', 'Names', 'consumer_config',
           'dlq_config', 'queue_config', 'received_headers']

MSG_ID = 'Nats-Msg-Id'
MESSAGE_ID = 'x-message-id'
ATTEMPT_BASE = 'x-attempt'
ATTEMPTS = 'x-attempts'
ERROR = 'x-error'
NATS_PREFIX = 'Nats-'


class Names:
    """Stream, subject and consumer names of the queues under one prefix.

    >>> names = Names('microagent')
    >>> names.stream('mailer'), names.subject('mailer'), names.dlq_stream('mailer')
    ('microagent_mailer', 'microagent.mailer', 'microagent_mailer-dlq')
    """

    def __init__(self, prefix: str) -> None:
        subject_token('broker prefix', prefix)
        if '/' in prefix or '\\' in prefix:
            raise ConfigurationError(f'NATS: broker prefix {prefix!r} cannot contain a path separator')
        self.prefix = prefix

    def stream(self, queue: str) -> str:
        return f'{self.prefix}_{subject_token("queue name", queue)}'

    def subject(self, queue: str) -> str:
        return f'{self.prefix}.{queue}'

    def dlq_stream(self, queue: str) -> str:
        return f'{self.stream(queue)}-dlq'

    def dlq_subject(self, queue: str) -> str:
        return f'{self.prefix}.{queue}.dlq'


def queue_config(names: Names, queue: str, replicas: int) -> StreamConfig:
    """The stream of *queue*: work-queue retention, on disk, de-duplicating retried publishes for 2 minutes."""
    return StreamConfig(name=names.stream(queue), subjects=[names.subject(queue)],
                        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE, num_replicas=replicas,
                        duplicate_window=120.0)


def dlq_config(names: Names, queue: str, replicas: int) -> StreamConfig:
    """The dead letters of *queue*: kept until someone removes them."""
    return StreamConfig(name=names.dlq_stream(queue), subjects=[names.dlq_subject(queue)],
                        retention=RetentionPolicy.LIMITS, storage=StorageType.FILE, num_replicas=replicas,
                        duplicate_window=120.0)


def consumer_config(names: Names, queue: str, *, ack_wait: float, max_ack_pending: int) -> ConsumerConfig:
    """The durable pull consumer of *queue*.

    No ``max_deliver``: the broker counts attempts itself (the delivery count is
    the attempt count) and dead-letters after ``max_attempts``, so the server
    never silently drops a message it gave up on.
    """
    return ConsumerConfig(durable_name=queue, name=queue, filter_subject=names.subject(queue),
                          ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=ack_wait,
                          max_deliver=-1, max_ack_pending=max_ack_pending)


def received_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's headers of a received message (NATS's and the backends' own left out).

    >>> received_headers({'Nats-Msg-Id': 'a.1', 'x-attempt': '2', 'tenant': 'acme'})
    {'tenant': 'acme'}
    """
    if not headers:
        return {}
    return {str(k): v for k, v in user_headers(headers).items() if not str(k).startswith(NATS_PREFIX)}
