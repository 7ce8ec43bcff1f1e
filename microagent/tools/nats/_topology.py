"""Wire details of the NATS broker: stream, subject and consumer names, their configs, the headers.

Queue ``q`` under prefix ``p`` (default ``microagent``):

* stream ``p_q`` (work-queue retention, file storage) on the one subject
  ``p.q``: an acknowledged message is deleted, so the stream holds exactly
  what waits, waits for a retry or is being handled;
* durable pull consumer ``q`` on it, shared by every consumer of the queue
  (replicas compete for messages; a work-queue stream allows one consumer per
  subject, which is what a queue is);
* stream ``p_q-dlq`` (limits retention) on ``p.q.dlq``: the dead letters,
  with the headers ``Microagent-Error`` and ``Microagent-Attempts``.

Headers of a queued message: ``Nats-Msg-Id`` (JetStream's de-duplication id:
a publish retried after a lost PubAck is stored once), ``Microagent-Attempt-Base``
(attempts made before this copy was stored: a copy given back at shutdown
keeps its count) and any headers of the caller, carried to retries, copies
and dead letters unchanged.
"""
from __future__ import annotations

from collections.abc import Mapping

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from ...exceptions import ConfigurationError
from ._connection import subject_token

__all__ = ['ATTEMPT_BASE', 'ATTEMPTS', 'ERROR', 'MSG_ID', 'Names', 'RESERVED', 'consumer_config', 'dlq_config',
           'queue_config', 'user_headers']

MSG_ID = 'Nats-Msg-Id'
ATTEMPT_BASE = 'Microagent-Attempt-Base'
ATTEMPTS = 'Microagent-Attempts'
ERROR = 'Microagent-Error'
RESERVED = ('Nats-', 'Microagent-')


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


def user_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's headers of a message (NATS's and ours left out)."""
    if not headers:
        return {}
    return {str(k): v for k, v in headers.items() if not str(k).startswith(RESERVED)}
