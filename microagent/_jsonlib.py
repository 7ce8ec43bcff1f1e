"""JSON codecs chosen by name (``"jsonlib": "orjson"`` in a declaration file)."""
from __future__ import annotations

import functools
import importlib
import json
import math
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

# orjson reads an integer beyond 64 bits as a float (json: exactly), so a float from orjson this large
# may have been an integer: such texts are read again by the stdlib.
_BIG = float(2 ** 63)


def _exact(value: Any) -> bool:
    """Whether *value* (read by orjson) has no float that may have been a long integer in the text."""
    kind = type(value)
    if kind is float:
        return bool(-_BIG < value < _BIG)
    if kind is not dict and kind is not list:
        return True
    for item in value.values() if kind is dict else value:
        kind = type(item)
        if (kind is float and not -_BIG < item < _BIG) or ((kind is dict or kind is list) and not _exact(item)):
            return False
    return True


def _fast_loads(fast: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The stdlib's ``json.loads`` results, read by *fast* (orjson) wherever it gives the same.

    orjson refuses what it reads differently (NaN, Infinity, 1e400, lone surrogates, a BOM, UTF-16),
    and reads integers beyond 64 bits as floats: those texts go to the stdlib, so the result never
    depends on orjson.

    >>> _fast_loads(__import__('orjson').loads)(b'{"a":[1,2.5,NaN],"b":123456789012345678901}')
    {'a': [1, 2.5, nan], 'b': 123456789012345678901}
    """
    slow = json.loads

    def loads(raw: Any) -> Any:
        try:
            value = fast(raw)
        except ValueError:
            return slow(raw)
        return value if _exact(value) else slow(raw)
    return loads


_ATOMS = frozenset({str, int, bool, type(None)})


def _plain(value: Any) -> bool:
    """Whether *value* holds only what orjson writes as the stdlib does: exact str, int, bool, None,
    finite float, list, tuple and str-keyed dict (no subclasses, enums, UUIDs, NaN: orjson differs there).

    >>> _plain({'a': [1, 'x', None, 2.5]}), _plain({'a': float('nan')}), _plain({1: 'x'})
    (True, False, False)
    """
    kind = type(value)
    if kind in _ATOMS:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (type(item) not in _ATOMS and not _plain(item)):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:  # noqa: SIM110 - a loop, not all(generator): this runs for every message sent
            if type(item) not in _ATOMS and not _plain(item):
                return False
        return True
    return False


def _fast_dumps(fast: Callable[[Any], bytes]) -> Callable[[Any], str]:
    """The stdlib's text for *data*, written by *fast* (orjson) when :func:`_plain` (floats may be spelt
    otherwise, ``1e-05`` or ``0.00001``: the same number).

    >>> _fast_dumps(__import__('orjson').dumps)({'a': 'é', 'b': [1, None], 'c': float('inf')})
    '{"a":"é","b":[1,null],"c":Infinity}'
    """
    def dumps(data: Any) -> str:
        try:
            if _plain(data):
                return fast(data).decode()
        except (TypeError, RecursionError):  # orjson: an int beyond 64 bits, a lone surrogate, deep nesting
            pass
        return _stdlib_dumps(data)
    return dumps


def _stdlib_json() -> Codec:
    try:
        orjson = importlib.import_module('orjson')
    except ImportError:
        return Codec('json', _stdlib_dumps, json.loads)
    return Codec('json', _fast_dumps(orjson.dumps), _fast_loads(orjson.loads))


@functools.cache
def get_codec(name: str = 'json') -> Codec:
    """Codec for a JSON library importable by *name* (``json``, ``orjson``, ``ujson``...)."""
    if name == 'json':
        return _stdlib_json()
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise ConfigurationError(f'jsonlib {name!r} is not installed') from exc
    dumps, loads = getattr(module, 'dumps', None), getattr(module, 'loads', None)
    if not callable(dumps) or not callable(loads):
        raise ConfigurationError(f'jsonlib {name!r} has no dumps/loads')
    return Codec(name, dumps, loads)
