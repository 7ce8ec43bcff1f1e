"""Signal (event) declarations with typed arguments.

Declared in JSON and loaded with :func:`microagent.load_signals`::

    {"signals": [
        {"name": "user_created", "providing_args": ["user_id"]},
        {"name": "user_updated", "providing_args": {"user_id": "number", "email": ["string", "null"]}}
    ]}

A list of names accepts any JSON value for each; a mapping names JSON types
(``string``, ``number``, ``integer``, ``boolean``, ``array``, ``object``,
``null``, ``any``, or a list of them). Sending with missing, unknown or
wrong-typed arguments raises :class:`SignalArgumentsError` before anything is
sent; receiving is tolerant (see :mod:`microagent.bus`).

Declared signals are also attributes of the class (default catalog), as in
microagent 1.9: ``Signal.user_created is Signal.get('user_created')``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ._declaration import DeclaredType, Serializable, check_name
from ._jsonlib import get_codec
from .catalog import DEFAULT_CATALOG, Catalog
from .exceptions import (
    ConfigurationError,
    SerializingError,
    SignalArgumentsError,
    SignalException,
    SignalNotFound,
)

__all__ = ['Signal', 'SignalArgumentsError', 'SignalException', 'SignalNotFound', 'SerializingError', 'json_type_ok']

JSON_TYPES: dict[str, tuple[type, ...]] = {
    'string': (str,),
    'number': (int, float),
    'integer': (int,),
    'boolean': (bool,),
    'array': (list, tuple),
    'object': (dict,),
    'null': (type(None),),
}
ArgTypes = tuple[tuple[str, tuple[str, ...]], ...]


@dataclasses.dataclass(frozen=True)
class Signal(Serializable, metaclass=DeclaredType):
    """Dataclass (declaration) for a signal with a unique name, registered at creation.

    >>> user_signed_up = Signal(name='user_signed_up', providing_args=['user_id'])
    >>> Signal.get('user_signed_up') is user_signed_up is Signal.user_signed_up
    True
    """

    _kind: ClassVar[str] = 'signal'
    name: str
    providing_args: tuple[str, ...] = ()
    jsonlib: str = 'json'
    description: str = dataclasses.field(default='', compare=False)
    arg_types: ArgTypes = dataclasses.field(init=False, repr=False)
    # The declared names, and whether any has a type: a send or receive whose names match an untyped
    # declaration is checked with one set comparison (the hot path of every signal).
    _names: frozenset[str] = dataclasses.field(init=False, repr=False, compare=False)
    _typed: bool = dataclasses.field(init=False, repr=False, compare=False)
    catalog: dataclasses.InitVar[Catalog | None] = None
    types: dataclasses.InitVar[Mapping[str, Any] | None] = None

    def __post_init__(self, catalog: Catalog | None, types: Mapping[str, Any] | None) -> None:
        check_name('signal', self.name)
        spec = _normalize_args(self.name, self.providing_args, types)
        object.__setattr__(self, 'providing_args', tuple(name for name, _ in spec))
        object.__setattr__(self, 'arg_types', spec)
        object.__setattr__(self, '_names', frozenset(name for name, _ in spec))
        object.__setattr__(self, '_typed', any(names for _, names in spec))
        get_codec(self.jsonlib)
        (catalog or DEFAULT_CATALOG).add_signal(self)

    @classmethod
    def get(cls, name: str) -> Signal:
        """Get the signal instance by name (default catalog)."""
        return DEFAULT_CATALOG.signal(name)

    @classmethod
    def get_all(cls) -> dict[str, Signal]:
        """All registered signals (default catalog)."""
        return DEFAULT_CATALOG.signals

    def make_channel_name(self, channel_prefix: str, sender: str = '*') -> str:
        """The microagent 1.9 channel of this signal: ``prefix:name:sender`` (``*``: every sender).

        >>> Signal('order_paid', ['order_id'], catalog=Catalog()).make_channel_name('APP', 'shop')
        'APP:order_paid:shop'
        """
        return f'{channel_prefix}:{self.name}:{sender}'

    def mismatch(self, kwargs: Mapping[str, Any]) -> str | None:
        """What is wrong with *kwargs* for this signal, or ``None`` if they fit."""
        if not self._typed and kwargs.keys() == self._names:
            return None
        expected = dict(self.arg_types)
        missing = [n for n in expected if n not in kwargs]
        unknown = [n for n in kwargs if n not in expected]
        if missing or unknown:
            return f'missing {missing}, unknown {unknown}' if missing and unknown else (
                f'missing {missing}' if missing else f'unknown {unknown}')
        for arg, names in self.arg_types:
            if names and not json_type_ok(kwargs[arg], names):
                return f'argument {arg!r} must be {"|".join(names)}, got {type(kwargs[arg]).__name__}'
        return None

    def check(self, kwargs: Mapping[str, Any]) -> None:
        """Raise :class:`SignalArgumentsError` if *kwargs* do not fit the declaration."""
        problem = self.mismatch(kwargs)
        if problem:
            raise SignalArgumentsError(f'signal {self.name!r}: {problem}')

    def to_dict(self) -> dict[str, Any]:
        """The JSON declaration of this signal."""
        if all(not names for _, names in self.arg_types):
            return {'name': self.name, 'providing_args': list(self.providing_args)}
        return {'name': self.name, 'providing_args': {a: list(t) or 'any' for a, t in self.arg_types}}


def json_type_ok(value: Any, names: tuple[str, ...]) -> bool:
    """Whether *value* is of one of the JSON types *names* (empty: any).

    >>> json_type_ok(1.5, ('integer',)), json_type_ok(True, ('number',)), json_type_ok(None, ())
    (False, False, True)
    """
    if not names:
        return True
    for name in names:
        kinds = JSON_TYPES[name]
        # bool is an int in Python but not a number in JSON.
        if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
            return True
    return False


def _normalize_args(signal: str, args: Any, types: Mapping[str, Any] | None) -> ArgTypes:
    if isinstance(args, Mapping):
        types, args = args, list(args)
    if isinstance(args, str) or not isinstance(args, Sequence):
        raise ConfigurationError(f'signal {signal!r}: providing_args must be a list of names or a mapping')
    out = []
    for arg in args:
        check_name(f'signal {signal!r}: argument', arg)
        out.append((arg, _type_names(signal, arg, (types or {}).get(arg, 'any'))))
    if len({a for a, _ in out}) != len(out):
        raise ConfigurationError(f'signal {signal!r}: providing_args has duplicates')
    return tuple(out)


def _type_names(signal: str, arg: str, spec: Any) -> tuple[str, ...]:
    names = [spec] if isinstance(spec, str) else spec
    if not isinstance(names, list | tuple) or not names:
        raise ConfigurationError(f'signal {signal!r}: type of {arg!r} must be a JSON type name or a list of them')
    for name in names:
        if name != 'any' and name not in JSON_TYPES:
            raise ConfigurationError(f'signal {signal!r}: unknown type {name!r} for {arg!r}, '
                                     f'expected one of {sorted(JSON_TYPES)} or "any"')
    return () if 'any' in names else tuple(sorted(set(names)))
