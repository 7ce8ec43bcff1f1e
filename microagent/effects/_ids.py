"""Ids of the effects: the inbox key of a handled message, and the ids of the messages its handler sends.

Both are UUIDv5 digests in namespaces of their own, so they are the same in
every process and every version of microagent:

* ``inbox_key(queue, message_id)``: the inbox row of a message handled from
  *queue* (the same message id on two queues is two handlings);
* ``outgoing_id(message_id, position)``: the id of the *position*-th send
  (0, 1, ...) of the transaction that handled *message_id*. A handler that is
  retried sends the same ids again, and a relay that publishes a row twice
  publishes the same id twice: the receiving inbox keeps one.

>>> str(inbox_key('orders', 'f3a1'))
'deb7209a-3b46-5fc9-bbd6-f635aa409c50'
>>> outgoing_id('f3a1', 0) == outgoing_id('f3a1', 0) != outgoing_id('f3a1', 1)
True
"""
from __future__ import annotations

import uuid

__all__ = ['INBOX_NAMESPACE', 'OUTBOX_NAMESPACE', 'inbox_key', 'outgoing_id']

INBOX_NAMESPACE = uuid.UUID('5b1f0f0e-52d4-4c0e-9a3c-6d1c1bde2a01')
OUTBOX_NAMESPACE = uuid.UUID('5b1f0f0e-52d4-4c0e-9a3c-6d1c1bde2a02')


def inbox_key(queue: str, message_id: str) -> uuid.UUID:
    """The inbox key of *message_id* handled from *queue*."""
    return uuid.uuid5(INBOX_NAMESPACE, f'{queue}\n{message_id}')


def outgoing_id(message_id: str, position: int) -> str:
    """The message id of send number *position* (from 0) in the transaction of *message_id* (32 hex digits)."""
    return uuid.uuid5(OUTBOX_NAMESPACE, f'{message_id}\n{position}').hex
