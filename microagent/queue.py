"""Queue declarations.

A :class:`Queue` is a value with a project-wide unique name. It is usually
declared in a JSON file and loaded with :func:`microagent.load_queues`::

    {"queues": [{"name": "mailer"},
                {"name": "ios_push", "exchange": "push", "topics": ["push.ios", "push.all.#"]}]}

A queue with ``exchange`` is bound to that exchange and gets every message sent
to it; with ``topics`` too, only those whose topic matches a pattern.

Declared queues are also attributes of the class (default catalog), as in
microagent 1.9: ``Queue.mailer is Queue.get('mailer')``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ._declaration import DeclaredType, Serializable, check_name
from ._jsonlib import get_codec
from .catalog import DEFAULT_CATALOG, Catalog, topic_route_ok
from .exceptions import ConfigurationError, QueueException, QueueNotFound, SerializingError
from .routing import check_pattern

__all__ = ['Queue', 'QueueException', 'QueueNotFound', 'SerializingError']


@dataclasses.dataclass(frozen=True)
class Queue(Serializable, metaclass=DeclaredType):
    """Dataclass (declaration) for a queue entity with a unique name.

    Each instance is registered at creation, in *catalog* or the default one::

        some_queue = Queue(name='some_queue')
        assert Queue.get('some_queue') is some_queue is Queue.some_queue
    """

    _kind: ClassVar[str] = 'queue'
    name: str
    exchange: str = ''
    topics: tuple[str, ...] = ()
    jsonlib: str = 'json'
    catalog: dataclasses.InitVar[Catalog | None] = None

    def __post_init__(self, catalog: Catalog | None) -> None:
        check_name('queue', self.name)
        if self.exchange:
            check_name(f'queue {self.name!r}: exchange', self.exchange)
        if isinstance(self.topics, str) or not isinstance(self.topics, (list, tuple)):
            raise ConfigurationError(f'queue {self.name!r}: topics must be a list of patterns')
        object.__setattr__(self, 'topics', tuple(check_pattern(t) for t in self.topics))
        if self.topics and not self.exchange:
            raise ConfigurationError(f'queue {self.name!r}: topics need an exchange')
        get_codec(self.jsonlib)
        (catalog or DEFAULT_CATALOG).add_queue(self)

    @classmethod
    def get(cls, name: str) -> Queue:
        """Get the queue instance by name (default catalog)."""
        return DEFAULT_CATALOG.queue(name)

    @classmethod
    def get_all(cls) -> dict[str, Queue]:
        """All registered queues (default catalog)."""
        return DEFAULT_CATALOG.queues

    def accepts(self, topic: str | None) -> bool:
        """Whether a message sent to this queue's exchange with *topic* reaches it."""
        return topic_route_ok(self.topics, topic)

    def to_dict(self) -> dict[str, Any]:
        """The JSON declaration of this queue."""
        out: dict[str, Any] = {'name': self.name}
        if self.exchange:
            out['exchange'] = self.exchange
        if self.topics:
            out['topics'] = list(self.topics)
        return out
