"""How a message lies in a Kafka record: its headers.

A record carries the message id in header ``x-message-id`` and the sender's
headers under their own names. The broker's own headers are ``x-attempt``,
``x-not-before`` and ``x-error`` on a retry copy, ``x-attempts``,
``x-error`` and ``x-source`` on a dead letter and ``x-topic`` on an exchange
record (names reserved on every backend: ``microagent._message``).

Records written before ids existed have no ``x-message-id`` and name the
broker's headers without the prefix (``attempt``, ``not_before``, ``error``,
``attempts``, ``source``, ``topic``); they have no sender's headers. Both
read the same:

>>> RecordHeaders([('x-message-id', b'c0ffee'), ('x-attempt', b'2'), ('k', b'v')]).number('x-attempt', 1)
2
>>> older = RecordHeaders([('attempt', b'3'), ('topic', b'push.ios')])
>>> older.number('x-attempt', 1), older.text('x-topic'), older.message_id, dict(older.headers)
(3, 'push.ios', '', {})
>>> outgoing('c0ffee', {'k': 'v'}, x_attempt=2)
[('x-message-id', b'c0ffee'), ('k', b'v'), ('x-attempt', b'2')]
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..._message import NO_HEADERS, is_reserved

__all__ = ['MESSAGE_ID', 'RecordHeaders', 'outgoing']

MESSAGE_ID = 'x-message-id'
_OLDER = {'attempt': 'x-attempt', 'not_before': 'x-not-before', 'error': 'x-error', 'attempts': 'x-attempts',
          'source': 'x-source', 'topic': 'x-topic'}


class RecordHeaders:
    """The headers of one record, read once: the message id, the sender's headers, the broker's own."""

    __slots__ = ('_own', 'headers', 'message_id')

    def __init__(self, raw: Iterable[tuple[str, Any]] | None) -> None:
        own: dict[str, str] = {}
        found: dict[str, str] = {}
        message_id = ''
        for name, value in raw or ():
            text = bytes(value).decode('utf-8', 'replace') if value is not None else ''
            if name == MESSAGE_ID:
                message_id = text
            elif is_reserved(name):
                own[name] = text
            else:
                found[name] = text
        if not message_id:  # written before ids: only the broker's headers, without the prefix
            own = {_OLDER[name]: text for name, text in found.items() if name in _OLDER}
            found = {}
        self.message_id = message_id
        self.headers: Mapping[str, str] = found or NO_HEADERS
        self._own = own

    def text(self, name: str, default: str = '') -> str:
        """The broker's header *name* (``x-...``), decoded."""
        return self._own.get(name, default)

    def number(self, name: str, default: int) -> int:
        """An integer header of the broker's; a missing or garbled one is *default* (a bad header must not stop
        the reader)."""
        try:
            return int(self._own.get(name) or default)
        except ValueError:
            return default


def outgoing(message_id: str, headers: Mapping[str, str], **own: Any) -> list[tuple[str, bytes]]:
    """Record headers: the id, the sender's *headers*, and the broker's own (``x_attempt=2`` is ``x-attempt``)."""
    found = [(MESSAGE_ID, message_id.encode())]
    found += [(name, value.encode()) for name, value in headers.items()]
    found += [(name.replace('_', '-'), str(value).encode('utf-8', 'replace')) for name, value in own.items()]
    return found
