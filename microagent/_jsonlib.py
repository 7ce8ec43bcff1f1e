"""JSON codecs chosen by name (``"jsonlib": "orjson"`` in a declaration file)."""
from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable
from typing import Any

from .exceptions import ConfigurationError, SerializingError

__all__ = ['Codec', 'get_codec']


class Codec:
    """Dumps to ``str`` and loads from ``str``/``bytes`` with one error type.

    >>> get_codec('json').dumps({'a': 1})
    '{"a":1}'
    """

    def __init__(self, name: str, dumps: Callable[[Any], Any], loads: Callable[[Any], Any]) -> None:
        self.name = name
        self._dumps = dumps
        self._loads = loads

    def dumps(self, data: Any) -> str:
        try:
            raw = self._dumps(data)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise SerializingError(f'cannot serialize with {self.name}: {exc}') from exc
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def loads(self, raw: str | bytes | bytearray | memoryview) -> Any:
        if isinstance(raw, memoryview):
            raw = bytes(raw)
        try:
            return self._loads(raw)
        except (TypeError, ValueError, RecursionError) as exc:
            # RecursionError: deeply nested input must not kill the worker.
            raise SerializingError(f'cannot deserialize with {self.name}: {exc}') from exc


def _stdlib_dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(',', ':'))


@functools.cache
def get_codec(name: str = 'json') -> Codec:
    """Codec for a JSON library importable by *name* (``json``, ``orjson``, ``ujson``...)."""
    if name == 'json':
        return Codec('json', _stdlib_dumps, json.loads)
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise ConfigurationError(f'jsonlib {name!r} is not installed') from exc
    dumps, loads = getattr(module, 'dumps', None), getattr(module, 'loads', None)
    if not callable(dumps) or not callable(loads):
        raise ConfigurationError(f'jsonlib {name!r} has no dumps/loads')
    return Codec(name, dumps, loads)
