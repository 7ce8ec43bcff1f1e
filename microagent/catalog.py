"""The explicit registry of signal and queue declarations.

Declarations are values; a :class:`Catalog` is where a process keeps them. The
seeds' API (``Queue(name='x')`` registers itself, ``Queue.get('x')``) uses
:data:`DEFAULT_CATALOG`; pass another catalog to loaders and backends to keep
declarations apart, as tests do::

    catalog = Catalog()
    queues = load_queues('file://queues.json', catalog=catalog)
    broker = MemoryBroker('memory://', catalog=catalog)

Adding an equal declaration twice is a no-op; adding a different one under the
same name raises :class:`DoubleLoadError` (a :class:`ConfigurationError`)
naming the field. A catalog also keeps the ``default_prefix`` of the signal
buses built on it (a declarations file may set it; ``prefix=`` wins).
"""
from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

from .exceptions import ConfigurationError, DoubleLoadError, QueueNotFound, SignalNotFound
from .routing import topic_matches

if TYPE_CHECKING:
    from .queue import Queue
    from .signal import Signal

__all__ = ['DEFAULT_CATALOG', 'Catalog']


class Catalog:
    """Signals, queues, the exchanges their queues are bound to, and the buses' default prefix.

    >>> catalog = Catalog()
    >>> catalog.set_default_prefix('MYAPP')
    >>> catalog.default_prefix
    'MYAPP'
    """

    def __init__(self) -> None:
        self.default_prefix: str | None = None
        self._signals: dict[str, Signal] = {}
        self._queues: dict[str, Queue] = {}
        self._routes: dict[tuple[str, str | None], tuple[Queue, ...]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f'<Catalog signals={len(self._signals)} queues={len(self._queues)}>'

    def add_signal(self, signal: Signal) -> Signal:
        """Register *signal*; an equal one already there is kept and returned."""
        with self._lock:
            merged: Signal = _merge(self._signals, signal, 'signal')
            return merged

    def add_queue(self, queue: Queue) -> Queue:
        """Register *queue*; a queue and an exchange may not share a name."""
        with self._lock:
            clash = queue.name if self._is_exchange(queue.name) else None
            if queue.exchange and queue.exchange in self._queues:
                clash = queue.exchange
            if clash:
                raise ConfigurationError(f'queue {queue.name!r}: {clash!r} is both a queue and an exchange')
            kept: Queue = _merge(self._queues, queue, 'queue')
            self._routes.clear()
            return kept

    def set_default_prefix(self, prefix: str) -> None:
        """Set the prefix of buses built without ``prefix=``; a different second value is a DoubleLoadError."""
        if not isinstance(prefix, str) or not prefix or ':' in prefix or '#' in prefix:
            raise ConfigurationError(f'default_prefix must be a non-empty string without ":" or "#", got {prefix!r}')
        with self._lock:
            if self.default_prefix not in (None, prefix):
                raise DoubleLoadError(f'default_prefix redeclared: {self.default_prefix!r} != {prefix!r}')
            self.default_prefix = prefix

    def signal(self, name: str) -> Signal:
        """The signal named *name*, or :class:`SignalNotFound`."""
        try:
            return self._signals[name]
        except KeyError:
            raise SignalNotFound(f'signal {name!r} is not declared') from None

    def queue(self, name: str) -> Queue:
        """The queue named *name*, or :class:`QueueNotFound`."""
        try:
            return self._queues[name]
        except KeyError:
            raise QueueNotFound(f'queue {name!r} is not declared') from None

    @property
    def signals(self) -> dict[str, Signal]:
        return dict(self._signals)

    @property
    def queues(self) -> dict[str, Queue]:
        return dict(self._queues)

    def is_exchange(self, name: str) -> bool:
        """Whether some declared queue is bound to exchange *name*."""
        return self._is_exchange(name)

    def _is_exchange(self, name: str) -> bool:
        return any(q.exchange == name for q in self._queues.values())

    def route(self, exchange: str, topic: str | None = None) -> tuple[Queue, ...]:
        """Queues that a message sent to *exchange* with *topic* reaches.

        A queue without topics is bound with ``#``: it gets every message of
        its exchange. With a topic, queues whose patterns match get it.
        """
        key = (exchange, topic)
        found = self._routes.get(key)
        if found is None:
            if not self._is_exchange(exchange):
                raise QueueNotFound(f'exchange {exchange!r} is not declared')
            found = tuple(q for q in self._queues.values() if q.exchange == exchange and q.accepts(topic))
            self._routes[key] = found
        return found


def _merge(store: dict[str, Any], item: Any, kind: str) -> Any:
    old = store.get(item.name)
    if old is None:
        store[item.name] = item
        return item
    for field in dataclasses.fields(item):
        if field.compare and getattr(old, field.name) != getattr(item, field.name):
            raise DoubleLoadError(
                f'{kind} {item.name!r} redeclared with a different {field.name}: '
                f'{getattr(old, field.name)!r} != {getattr(item, field.name)!r}')
    return old


def topic_route_ok(patterns: tuple[str, ...], topic: str | None) -> bool:
    """Whether a queue bound with *patterns* gets a message sent with *topic*."""
    # No patterns means bound with '#'; a missing topic is the empty routing key.
    if not patterns:
        return True
    return any(topic_matches(p, topic or '') for p in patterns)


DEFAULT_CATALOG = Catalog()
"""The catalog behind ``Queue.get``/``Signal.get`` and backends built without one."""
