"""What signals and queues have in common: a checked name, a codec, a catalog, class attribute access."""
from __future__ import annotations

import re
from typing import Any

from ._jsonlib import get_codec
from .catalog import DEFAULT_CATALOG
from .exceptions import ConfigurationError, SerializingError

__all__ = ['DeclaredType', 'Serializable', 'check_name']

NAME_RE = re.compile(r'^[a-z_][a-z0-9_]*$')


def check_name(kind: str, name: Any) -> str:
    """Return *name* if it is a lower-case identifier, else raise ConfigurationError."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigurationError(f'{kind} name {name!r} must match [a-z_][a-z0-9_]*')
    return name


class DeclaredType(type):
    """``Signal.<name>`` / ``Queue.<name>``: the declaration of the default catalog (microagent 1.9's access).

    The class names its kind in ``_kind`` (``'signal'`` or ``'queue'``: the catalog's lookup method).
    """

    _kind: str

    def __getattr__(cls, name: str) -> Any:
        if name.startswith('_'):
            raise AttributeError(name)
        try:
            return getattr(DEFAULT_CATALOG, cls._kind)(name)
        except AttributeError as exc:  # SignalNotFound / QueueNotFound
            known = sorted(getattr(DEFAULT_CATALOG, f'{cls._kind}s')) or 'none: were the declarations loaded?'
            raise type(exc)(f'{exc}; known: {known}') from None


class Serializable:
    """Mixin giving ``serialize``/``deserialize`` of dicts with the declared ``jsonlib``."""

    name: str
    jsonlib: str

    def serialize(self, data: dict[str, Any]) -> str:
        """Data serializing method: a dict to a JSON string (SerializingError otherwise)."""
        if not isinstance(data, dict):
            raise SerializingError(f'{self.name}: message must be a dict, not {type(data).__name__}')
        return get_codec(self.jsonlib).dumps(data)

    def deserialize(self, data: str | bytes) -> dict[str, Any]:
        """Data deserializing method: a JSON object to a dict (SerializingError otherwise)."""
        value = get_codec(self.jsonlib).loads(data)
        if not isinstance(value, dict):
            raise SerializingError(f'{self.name}: message must be a JSON object, not {type(value).__name__}')
        return value
