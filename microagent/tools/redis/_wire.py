"""How a message lies in Redis: the fields of a stream entry, a packed FETCH reply, a delayed retry.

A stream entry holds the body in field ``b``, the message id in ``i``, the
headers (one JSON object, :func:`microagent._message.encode_headers`) in
``h`` when there are any and, after the first attempt, the attempt count in
``a``. A dead letter adds the error in ``e``. Entries written before ids and
headers existed have only ``b`` (and ``a``): they decode with no id (the
reader then uses the entry id) and no headers.

A retry waits in the queue's ZSET as one member,
``m<attempt>:<entry id>:<id length>:<headers length>:<id><headers><body>``;
members of the older form ``<attempt>:<entry id>:<body>`` still promote.

>>> entry(b'1-0', [b'b', b'{}', b'i', b'c0ffee', b'a', b'2'])
('1-0', b'{}', 2, 'c0ffee', b'')
>>> retry_member(3, '1-0', 'c0ffee', b'{"k":"v"}', b'{}')
b'm3:1-0:6:9:c0ffee{"k":"v"}{}'
"""
from __future__ import annotations

from typing import Any

from ..._message import decode_headers, encode_headers
from ...delivery import DeadLetter

__all__ = ['Entry', 'dead_letter', 'entry', 'fields', 'retry_member', 'unpack']

Entry = tuple[str, bytes, int, str, bytes]  # entry id, body, attempt, message id, headers (JSON, b'' for none)


def fields(message: str, message_id: str, headers: dict[str, str]) -> list[str]:
    """The fields of a new entry (after ``XADD <stream> *``).

    >>> fields('{}', 'c0ffee', {'k': 'v'})
    ['b', '{}', 'i', 'c0ffee', 'h', '{"k":"v"}']
    """
    found = ['b', message, 'i', message_id]
    if headers:
        found += ['h', encode_headers(headers)]
    return found


def entry(raw_id: bytes, flat: list[bytes]) -> Entry:
    """A stream entry ``[id, [b'b', body, b'i', id, ...]]`` as an :data:`Entry`."""
    body, attempt, message_id, headers = b'', 1, '', b''
    for i in range(0, len(flat) - 1, 2):
        name, value = flat[i], flat[i + 1]
        if name == b'b':
            body = value
        elif name == b'i':
            message_id = value.decode('utf-8', 'replace')
        elif name == b'h':
            headers = value
        elif name == b'a' and value.isdigit():
            attempt = int(value)
    return raw_id.decode(), body, attempt, message_id, headers


def unpack(data: bytes | None) -> list[Entry]:
    """The entries of a FETCH reply: ``<entry id> <attempt> <body len> <id len> <headers len>\\n<body><id><headers>``.

    >>> unpack(b'1-0 2 2 3 0\\n{}abc')
    [('1-0', b'{}', 2, 'abc', b'')]
    """
    entries = []
    pos, end = 0, len(data or b'')
    while data and pos < end:
        newline = data.index(b'\n', pos)
        entry_id, attempt, size, id_size, headers_size = data[pos:newline].split(b' ')
        start = newline + 1
        body_end = start + int(size)
        id_end = body_end + int(id_size)
        pos = id_end + int(headers_size)
        entries.append((entry_id.decode(), data[start:body_end], int(attempt) if attempt.isdigit() else 1,
                        data[body_end:id_end].decode('utf-8', 'replace'), data[id_end:pos]))
    return entries


def retry_member(attempt: int, entry_id: str, message_id: str, headers: bytes, body: bytes) -> bytes:
    """The delayed-retry ZSET member of a copy (see the module docstring); unique by its entry id."""
    mid = message_id.encode()
    return b'm%d:%s:%d:%d:%s%s%s' % (attempt, entry_id.encode(), len(mid), len(headers), mid, headers, body)


def dead_letter(found: dict[Any, Any]) -> DeadLetter:
    """A dead-letter entry's fields (``b``, ``e``, ``a``, ``i``, ``h``) as a :class:`DeadLetter`."""
    def text(key: bytes) -> str:
        value = found.get(key, b'')
        return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)
    attempts = text(b'a')
    return DeadLetter(text(b'b'), text(b'e'), int(attempts) if attempts.isdigit() else 1, text(b'i'),
                      decode_headers(found.get(b'h')))
