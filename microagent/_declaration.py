"""What signals and queues have in common: a checked name, a codec, a catalog."""
from __future__ import annotations

import re
from typing import Any

from ._jsonlib import get_codec
from .exceptions import ConfigurationError, SerializingError

__all__ = ['check_name', 'Serializable']

NAME_RE = re.compile(r'^[a-z_][a-z0-9_]*$')


def check_name(kind: str, name: Any) -> str:
    """Return *name* if it is a lower-case identifier, else raise ConfigurationError."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigurationError(f'{kind} name {name!r} must match [a-z_][a-z0-9_]*')
    return name


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
