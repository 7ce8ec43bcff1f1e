"""JSON Schemas of message payloads: signal envelopes from typed ``providing_args``, queue messages from DTOs.

>>> from microagent import Catalog, Signal
>>> sig = Signal('user_created', providing_args={'user_id': 'integer', 'email': ['string', 'null']},
...              catalog=Catalog())
>>> signal_args_schema(sig)['properties']
{'user_id': {'type': 'integer'}, 'email': {'type': ['null', 'string']}}
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from ..signal import Signal

__all__ = ['REF', 'dto_schema', 'reply_schema', 'signal_args_schema', 'signal_schema']

REF = '#/components/schemas/{model}'
_SIMPLE: dict[Any, str] = {str: 'string', int: 'integer', float: 'number', bool: 'boolean', list: 'array',
                           tuple: 'array', dict: 'object', type(None): 'null'}


def signal_args_schema(signal: Signal) -> dict[str, Any]:
    """The ``a`` (arguments) object of *signal*: each declared argument, with its JSON types if given."""
    props: dict[str, Any] = {}
    for arg, names in signal.arg_types:
        props[arg] = {} if not names else {'type': names[0] if len(names) == 1 else list(names)}
    return {'type': 'object', 'properties': props, 'required': list(signal.providing_args),
            'additionalProperties': False}


def signal_schema(signal: Signal) -> dict[str, Any]:
    """The wire envelope of *signal*: sender, arguments and, for RPC, correlation id and reply channel."""
    return {'type': 'object', 'required': ['s', 'a'], 'properties': {
        's': {'type': 'string', 'description': 'sender'},
        'a': signal_args_schema(signal),
        'c': {'type': 'string', 'description': 'RPC: correlation id'},
        'r': {'type': 'string', 'description': 'RPC: the channel to send the response to'},
        'h': {'type': 'object', 'additionalProperties': {'type': 'string'}, 'description': 'headers'},
    }}


def reply_schema(keys: list[str]) -> dict[str, Any]:
    """An RPC response: the correlation id and ``{"Class.method": value}`` from each responder in *keys*."""
    return {'type': 'object', 'required': ['c', 'r'], 'properties': {
        'c': {'type': 'string', 'description': 'the correlation id of the request'},
        'r': {'type': 'object', 'description': 'the response, keyed by the responding handler',
              'properties': {key: {} for key in keys}, 'minProperties': 1, 'maxProperties': 1},
    }}


def dto_schema(dto: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The schema of a consumer's ``dto_class`` (pydantic model, dataclass, else any object).

    Shared definitions go to *defs* (the document's ``components.schemas``).
    """
    if dto is not None and callable(getattr(dto, 'model_json_schema', None)):
        schema: dict[str, Any] = dto.model_json_schema(ref_template=REF)
        defs.update(schema.pop('$defs', {}))
        return schema
    if dataclasses.is_dataclass(dto) and isinstance(dto, type):
        return _dataclass_schema(dto)
    return {'type': 'object'}


def _dataclass_schema(dto: type) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(dto)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fields without types
        hints = {}
    props, required = {}, []
    for f in dataclasses.fields(dto):
        props[f.name] = _type_schema(hints.get(f.name, Any))
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    schema: dict[str, Any] = {'type': 'object', 'title': dto.__name__, 'properties': props, 'required': required}
    return schema


def _type_schema(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        names = [_SIMPLE.get(arg) for arg in typing.get_args(hint)]
        return {'type': sorted(set(names))} if all(names) else {}
    name = _SIMPLE.get(origin or hint)
    return {'type': name} if name else {}
