"""What travels with every queue message besides its body: a stable message id and headers.

The contract (``microagent.broker``): every message gets an id when it is
sent (:func:`new_message_id`, or the caller's ``message_id=``) and may carry
headers, a ``str -> str`` mapping; both stay with it across retries and into
the dead-letter queue. Each backend stores them its own way (Redis stream
fields, AMQP properties and headers, Kafka record headers); this module holds
the rules they share.

>>> len(new_message_id())
32
>>> check_headers({'traceparent': '00-abc-01'})
{'traceparent': '00-abc-01'}
>>> check_headers({'x-attempt': '2'})
Traceback (most recent call last):
...
microagent.exceptions.SerializingError: header 'x-attempt' is reserved for the backends' own bookkeeping
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from .exceptions import SerializingError

__all__ = ['NO_HEADERS', 'RESERVED_HEADERS', 'check_headers', 'check_message_id', 'decode_headers',
           'encode_headers', 'is_reserved', 'message_ids_for', 'new_message_id', 'user_headers']

# Names the backends use for their own bookkeeping, on every backend alike (so a header that works on
# one works on all): attempt counts, errors, due times, exchange topics, and what RabbitMQ adds itself.
RESERVED_HEADERS = frozenset({
    'x-attempt', 'x-attempts', 'x-error', 'x-message-id', 'x-not-before', 'x-source', 'x-topic',
    'x-death', 'x-delivery-count',
})
_RESERVED_PREFIXES = ('x-first-death-', 'x-last-death-')
_MAX_ID = 255  # bytes: AMQP's message-id property is a short string

NO_HEADERS: Mapping[str, str] = MappingProxyType({})

# Version 4 (random) UUID bits, set on 128 random bits: what uuid.uuid4().hex gives, at a third of its cost
# (this runs for every message sent).
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (0x4000 << 64) | (0x8000 << 48)


def new_message_id() -> str:
    """A fresh message id: a random (version 4) UUID as 32 hex digits."""
    return '%032x' % (int.from_bytes(os.urandom(16), 'big') & _CLEAR | _SET)


def check_message_id(message_id: Any) -> str:
    """*message_id* if it is a usable id (a non-empty str of at most 255 bytes); SerializingError if not."""
    if not isinstance(message_id, str) or not message_id or len(message_id.encode()) > _MAX_ID:
        raise SerializingError(f'message_id must be a non-empty str of at most {_MAX_ID} bytes, got {message_id!r:.80}')
    return message_id


def message_ids_for(messages: Sequence[Any], message_ids: Sequence[str] | None) -> list[str]:
    """One id per message of a batch: the caller's *message_ids* (checked) or new ones.

    >>> message_ids_for(['{}', '{}'], ['a', 'b'])
    ['a', 'b']
    """
    if message_ids is None:
        return [new_message_id() for _ in messages]
    if isinstance(message_ids, str) or len(message_ids) != len(messages):
        raise SerializingError(f'message_ids must be a sequence of one id per message ({len(messages)})')
    return [check_message_id(m) for m in message_ids]


def is_reserved(name: str) -> bool:
    """Whether header *name* belongs to the backends (see :data:`RESERVED_HEADERS`)."""
    return name in RESERVED_HEADERS or name.startswith(_RESERVED_PREFIXES)


def check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of *headers* after checking it is a ``str -> str`` mapping without reserved names."""
    if not headers:
        return {}
    if not isinstance(headers, Mapping):
        raise SerializingError(f'headers must be a mapping of str to str, got {type(headers).__name__}')
    for name, value in headers.items():
        if not isinstance(name, str) or not name:
            raise SerializingError(f'header names must be non-empty str, got {name!r:.80}')
        if not isinstance(value, str):
            raise SerializingError(f'header {name!r}: value must be a str, got {type(value).__name__}')
        if is_reserved(name):
            raise SerializingError(f"header {name!r} is reserved for the backends' own bookkeeping")
    return dict(headers)


def user_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The caller's headers among what a backend received: str values (bytes decoded), reserved names left out.

    >>> user_headers({'k': 'v', 'x-attempt': 2, 'b': b'yes', 'n': 1})
    {'k': 'v', 'b': 'yes'}
    """
    found: dict[str, str] = {}
    for name, value in (headers or {}).items():
        text = value.decode('utf-8', 'replace') if isinstance(value, bytes) else value
        if isinstance(name, str) and isinstance(text, str) and not is_reserved(name):
            found[name] = text
    return found


def encode_headers(headers: Mapping[str, str]) -> str:
    """Headers as one compact JSON object (for backends that keep them in one field)."""
    return json.dumps(headers, separators=(',', ':'), ensure_ascii=False)


def decode_headers(raw: bytes | str | None) -> dict[str, str]:
    """Headers from :func:`encode_headers`; anything garbled decodes as no headers (never a stuck message).

    >>> decode_headers(encode_headers({'a': 'b'}))
    {'a': 'b'}
    >>> decode_headers(b'not json')
    {}
    """
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return user_headers(data) if isinstance(data, dict) else {}
