"""Tolerant reading of received signals: deliver what a handler can take, complain once.

In a rolling deploy the sender's declarations are often newer than the
receiver's (a new argument), or older (one missing). A received signal is not
dropped for that: each handler gets the arguments it can take, and each
difference is logged once per signal and argument.

>>> params = HandlerParams.of(lambda user_id, **kwargs: None)
>>> params.fit({'user_id': 1, 'email': 'a@b.c'})
{'user_id': 1, 'email': 'a@b.c'}
>>> HandlerParams.of(lambda user_id: None).fit({'user_id': 1, 'email': 'a@b.c'})
{'user_id': 1}
>>> HandlerParams.of(lambda user_id: None).fit({'email': 'a@b.c'}) is None
True
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .signal import json_type_ok

if TYPE_CHECKING:
    from .signal import Signal

__all__ = ['Complaints', 'HandlerParams', 'log_problems', 'received_problems']

_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_ALWAYS = frozenset({'signal', 'sender'})  # every receiver call passes them


@dataclass(frozen=True)
class HandlerParams:
    """Which keyword arguments a handler takes: all (``**kwargs``) or *named*; *required* ones must be there."""

    var_kw: bool
    named: frozenset[str]
    required: frozenset[str]
    takes_all: bool = False  # every keyword, none required but signal and sender: any signal fits as it is

    @classmethod
    def of(cls, handler: Callable[..., Any]) -> HandlerParams:
        try:
            params = list(inspect.signature(handler).parameters.values())
        except (TypeError, ValueError):
            return cls(True, frozenset(), frozenset(), True)  # not introspectable: pass everything
        named = frozenset(p.name for p in params if p.kind in _KEYWORD)
        required = frozenset(p.name for p in params if p.kind in _KEYWORD and p.default is p.empty)
        var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
        return cls(var_kw, named, required, var_kw and required <= _ALWAYS)

    def fit(self, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """*kwargs* cut to what the handler takes; None when a required argument is missing."""
        if not self.var_kw and not self.named.issuperset(kwargs):
            kwargs = {k: v for k, v in kwargs.items() if k in self.named}
        return kwargs if self.required.issubset(kwargs) else None

    def missing(self, kwargs: Mapping[str, Any]) -> list[str]:
        """The required arguments not in *kwargs*."""
        return sorted(self.required.difference(kwargs))


class Complaints:
    """Remembers what was logged, so each problem is logged once (at most *limit* remembered)."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._seen: set[Hashable] = set()

    def first(self, key: Hashable) -> bool:
        """True the first time *key* is seen (and always once *limit* keys were seen: logs, never memory)."""
        if key in self._seen:
            return False
        if len(self._seen) < self.limit:
            self._seen.add(key)
        return True


def received_problems(signal: Signal, args: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(kind, argument)`` for each difference between received *args* and the declaration.

    Kinds: ``unknown`` (not declared here), ``missing`` (declared, not received),
    ``type`` (received with another JSON type than declared).
    """
    if signal.mismatch(args) is None:
        return []
    expected = dict(signal.arg_types)
    out = [('unknown', a) for a in args if a not in expected]
    out.extend(('missing', a) for a in expected if a not in args)
    out.extend(('type', a) for a, names in signal.arg_types if a in args and not json_type_ok(args[a], names))
    return out


def log_problems(log: logging.Logger, complaints: Complaints, signal: Signal, args: Mapping[str, Any]) -> None:
    """Log each difference of *args* from *signal*'s declaration, once per signal, kind and argument."""
    for kind, arg in received_problems(signal, args):
        if not complaints.first((signal.name, kind, arg)):
            continue
        if kind == 'unknown':
            log.warning('Signal %s: received argument %r is not declared here; delivered to handlers taking '
                        '**kwargs, left out for the others (logged once)', signal.name, arg)
        elif kind == 'missing':
            log.warning('Signal %s: received without declared argument %r; delivered to handlers that do not '
                        'require it (logged once)', signal.name, arg)
        else:
            log.warning('Signal %s: received argument %r of type %s, declared %s (logged once)', signal.name, arg,
                        type(args[arg]).__name__, '|'.join(dict(signal.arg_types)[arg]))
