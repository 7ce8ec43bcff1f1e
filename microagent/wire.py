"""Wire formats: this project's (``native``) and microagent 1.9's (``microagent1``), for mixed fleets.

Every bus and broker takes ``wire='native'`` (the default) or ``wire='microagent1'``
(also ``WIRE = 'microagent1'`` in launcher settings). In ``microagent1`` mode an
agent of this project *writes* what agents of microagent 1.9 read:

* Redis signal bus: a signal is published on ``PREFIX:<signal>:<sender>`` with the
  arguments as the whole JSON body; an RPC call on ``PREFIX:<signal>:<sender>#<id>``,
  answered on ``PREFIX:response:<responder uid>#<id>`` with ``{"Class.method": value}``;
* Redis broker: a queue is the list ``<queue>`` (``RPUSH``), not a stream;
* AMQP broker: queues and exchanges are declared as 1.9 declares them
  (not durable, no arguments), so both can publish to and consume from them.

Every bus *reads* both formats in both modes, and every Redis consumer also
takes what 1.9 producers push to the list (see ``microagent.tools.redis``):
a fleet is upgraded one agent at a time. Kafka records are the same in both.
docs/migrating.md has the steps and what is guaranteed in each mode.

>>> check_wire('RedisBroker', 'microagent1')
'microagent1'
>>> legacy_channel('APP', 'user_created', 'users')
'APP:user_created:users'
>>> parse_legacy('APP', 'APP:user_created:users#5f2a')
('user_created', 'users', '5f2a')
"""
from __future__ import annotations

from .exceptions import ConfigurationError

__all__ = ['MICROAGENT1', 'NATIVE', 'WIRES', 'check_migration', 'check_sender', 'check_wire', 'glob_escape',
           'legacy_channel', 'parse_legacy']

NATIVE = 'native'
MICROAGENT1 = 'microagent1'
WIRES = (NATIVE, MICROAGENT1)


def check_wire(owner: str, wire: str) -> str:
    """*wire* if it is a known wire format, else ConfigurationError naming *owner*."""
    if wire not in WIRES:
        raise ConfigurationError(f'{owner}: wire must be one of {list(WIRES)}, got {wire!r}')
    return wire


def check_migration(owner: str, wire: str) -> None:
    """ConfigurationError unless a broker on *wire* may move a 1.9 queue to the native format.

    >>> check_migration('<RedisBroker>', NATIVE)
    """
    if wire == MICROAGENT1:
        raise ConfigurationError(f"{owner}: migrate_queue moves a queue to this project's format: "
                                 "use a broker with wire='native'")


def check_sender(sender: str) -> str:
    """A sender name fit for a microagent 1.9 channel (which splits on ``:`` and ``#``)."""
    if not isinstance(sender, str) or not sender or ':' in sender or '#' in sender:
        raise ConfigurationError(f'wire microagent1: sender must be a non-empty string without ":" or "#", '
                                 f'got {sender!r}')
    return sender


def legacy_channel(prefix: str, name: str, sender: str, request: str = '') -> str:
    """The microagent 1.9 channel of a signal (``#request`` for an RPC call)."""
    channel = f'{prefix}:{name}:{sender}'
    return f'{channel}#{request}' if request else channel


def parse_legacy(prefix: str, channel: str) -> tuple[str, str, str] | None:
    """``(signal, sender, request id)`` of a 1.9 channel under *prefix*, None for another shape."""
    head = prefix + ':'
    if not channel.startswith(head):
        return None
    name, sep, tail = channel[len(head):].partition(':')
    if not sep or not name:
        return None
    sender, _, request = tail.partition('#')
    return name, sender, request


def glob_escape(text: str) -> str:
    """*text* as a literal in a Redis glob pattern.

    >>> glob_escape('A*B:')
    'A\\\\*B:'
    """
    return ''.join('\\' + c if c in '*?[]\\' else c for c in text)
