"""JSON codecs chosen by name (``"jsonlib": "orjson"`` in a declaration file)."""
from __future__ import annotations

import functools
import importlib
import json
import re
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


# One encoder for every call: json.dumps with options builds a new one each time.
_stdlib_dumps = json.JSONEncoder(ensure_ascii=False, separators=(',', ':')).encode

# An integer of 19 or more digits may be beyond 64 bits, which orjson reads as a float (json: exactly).
_LONG_DIGITS = re.compile(rb'[0-9]{19}')
_LONG_DIGITS_TEXT = re.compile('[0-9]{19}')


def _fast_loads(fast: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The stdlib's ``json.loads`` results, read by *fast* (orjson) wherever it gives the same.

    orjson refuses what it reads differently (NaN, Infinity, 1e400, lone surrogates, a BOM, UTF-16):
    those, and texts with a long digit run, go to the stdlib, so the result never depends on orjson.

    >>> _fast_loads(__import__('orjson').loads)(b'{"a":[1,2.5,NaN],"b":123456789012345678901}')
    {'a': [1, 2.5, nan], 'b': 123456789012345678901}
    """
    slow = json.loads

    def loads(raw: Any) -> Any:
        if (_LONG_DIGITS_TEXT if isinstance(raw, str) else _LONG_DIGITS).search(raw) is None:
            try:
                return fast(raw)
            except ValueError:
                pass
        return slow(raw)
    return loads


def _stdlib_loads() -> Callable[[Any], Any]:
    try:
        orjson = importlib.import_module('orjson')
    except ImportError:
        return json.loads
    return _fast_loads(orjson.loads)


@functools.cache
def get_codec(name: str = 'json') -> Codec:
    """Codec for a JSON library importable by *name* (``json``, ``orjson``, ``ujson``...)."""
    if name == 'json':
        return Codec('json', _stdlib_dumps, _stdlib_loads())
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise ConfigurationError(f'jsonlib {name!r} is not installed') from exc
    dumps, loads = getattr(module, 'dumps', None), getattr(module, 'loads', None)
    if not callable(dumps) or not callable(loads):
        raise ConfigurationError(f'jsonlib {name!r} has no dumps/loads')
    return Codec(name, dumps, loads)
