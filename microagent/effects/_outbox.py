"""Sends through a transaction: ``tx.broker.<queue or exchange>.send(...)`` and ``tx.bus.<signal>.send(...)``.

They look like the agent's own ``self.broker`` and ``self.bus`` and check the
same things at once (declared names, serialization, exchange routing, signal
arguments), but nothing leaves the process: each send becomes a row of the
outbox, written in the same transaction as the handler's other writes, and a
relay publishes it after the commit (:mod:`microagent.effects._relay`).

Not run: needs PostgreSQL (and the backends of the broker and bus).
>>> await tx.broker.mailer.send({'to': 'a@b.c'})                  # doctest: +SKIP
>>> await tx.broker.push.send({'text': 'hi'}, topic='push.ios')   # doctest: +SKIP
>>> await tx.bus.user_created.send('users', user_id=1)            # doctest: +SKIP
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .._message import check_headers
from ..bus import signal_envelope
from ..exceptions import ConfigurationError, DeliveryError, QueueNotFound

if TYPE_CHECKING:

    from ..catalog import Catalog
    from ..queue import Queue
    from ..signal import Signal
    from ._schema import Tables
    from ._types import Connection

__all__ = ['KINDS', 'OutboxBroker', 'OutboxBus', 'Staged', 'destination_of', 'write_staged']

KINDS = ('queue', 'exchange', 'signal')


@dataclass(frozen=True, slots=True)
class Staged:
    """One send waiting in a transaction: where to, what, under which message id."""

    destination: str
    body: str
    message_id: str
    topic: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.destination.partition(':')[0]

    @property
    def name(self) -> str:
        return self.destination.partition(':')[2]


def destination_of(kind: str, name: str) -> str:
    """``'queue:mailer'``, ``'exchange:push'``, ``'signal:user_created'``: the unit of ordering of the relay."""
    if kind not in KINDS:
        raise ConfigurationError(f'outbox: unknown destination kind {kind!r}, expected one of {KINDS}')
    return f'{kind}:{name}'


class Stager(Protocol):
    """What the proxies write to (the transaction)."""

    def stage(self, destination: str, body: str, *, topic: str | None = None,
              headers: Mapping[str, str] | None = None) -> str: ...


def _check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    # The contract's own check (str -> str, no reserved names): a bad header fails the send now, not the relay.
    return check_headers(headers) if headers else {}


class OutboxQueue:
    """A queue seen through a transaction: ``await tx.broker.mailer.send({'to': 'a@b.c'})``."""

    __slots__ = ('queue', 'stager')

    def __init__(self, stager: Stager, queue: Queue) -> None:
        self.stager = stager
        self.queue = queue

    def __repr__(self) -> str:
        return f'<OutboxQueue {self.queue.name}>'

    async def send(self, message: dict[str, Any], *, headers: Mapping[str, str] | None = None) -> str:
        """Serialize *message* (SerializingError: nothing staged) and stage it; its message id."""
        return self.stager.stage(destination_of('queue', self.queue.name), self.queue.serialize(message),
                                 headers=_check_headers(headers))

    __call__ = send

    async def send_many(self, messages: Sequence[dict[str, Any]], *,
                        headers: Mapping[str, str] | None = None) -> list[str]:
        """Stage several messages, in order; their message ids."""
        bodies = [self.queue.serialize(m) for m in messages]  # all or nothing: serialize before staging any
        checked = _check_headers(headers)
        return [self.stager.stage(destination_of('queue', self.queue.name), body, headers=checked)
                for body in bodies]


class OutboxExchange:
    """An exchange seen through a transaction: ``await tx.broker.push.send(msg, topic='push.ios')``."""

    __slots__ = ('catalog', 'name', 'stager')

    def __init__(self, stager: Stager, catalog: Catalog, name: str) -> None:
        self.stager = stager
        self.catalog = catalog
        self.name = name

    def __repr__(self) -> str:
        return f'<OutboxExchange {self.name}>'

    async def send(self, message: dict[str, Any], topic: str | None = None, *,
                   headers: Mapping[str, str] | None = None) -> str:
        """Stage *message* for every queue of the exchange that accepts *topic*; its message id."""
        routed = self.catalog.route(self.name, topic)
        if not routed:
            # The same answer the broker gives, but now: after the commit nobody could be told.
            raise DeliveryError(f'exchange {self.name!r}: no bound queue accepts topic {topic!r}')
        return self.stager.stage(destination_of('exchange', self.name), routed[0].serialize(message),
                                 topic=topic, headers=_check_headers(headers))

    __call__ = send


class OutboxBroker:
    """``tx.broker``: every declared queue and exchange, sending through the outbox."""

    def __init__(self, stager: Stager, catalog: Catalog) -> None:
        self._stager = stager
        self._catalog = catalog

    def __repr__(self) -> str:
        return '<OutboxBroker>'

    def __getattr__(self, name: str) -> OutboxQueue | OutboxExchange:
        if name.startswith('_'):
            raise AttributeError(name)
        try:
            return OutboxQueue(self._stager, self._catalog.queue(name))
        except QueueNotFound:
            if not self._catalog.is_exchange(name):
                raise QueueNotFound(f'tx.broker: no queue or exchange {name!r} is declared') from None
            return OutboxExchange(self._stager, self._catalog, name)


class OutboxSignal:
    """A signal seen through a transaction: ``await tx.bus.user_created.send('users', user_id=1)``."""

    __slots__ = ('signal', 'stager')

    def __init__(self, stager: Stager, signal: Signal) -> None:
        self.stager = stager
        self.signal = signal

    def __repr__(self) -> str:
        return f'<OutboxSignal {self.signal.name}>'

    async def send(self, sender: str, **kwargs: Any) -> str:
        """Check the arguments (SignalArgumentsError: nothing staged) and stage the signal; its message id.

        ``headers={...}`` travels in the envelope, as with ``bus.<signal>.send``.
        """
        body = self.signal.serialize(signal_envelope(self.signal, sender, kwargs))
        return self.stager.stage(destination_of('signal', self.signal.name), body)

    __call__ = send


class OutboxBus:
    """``tx.bus``: every declared signal, sent through the outbox (RPC ``call`` is not transactional)."""

    def __init__(self, stager: Stager, catalog: Catalog) -> None:
        self._stager = stager
        self._catalog = catalog

    def __repr__(self) -> str:
        return '<OutboxBus>'

    def __getattr__(self, name: str) -> OutboxSignal:
        if name.startswith('_'):
            raise AttributeError(name)
        return OutboxSignal(self._stager, self._catalog.signal(name))


async def write_staged(connection: Connection, tables: Tables, staged: Sequence[Staged],
                       timeout: float | None = None) -> None:
    """Insert the staged sends in one statement (their order is their ``seq`` order)."""
    # unnest keeps the array order, and an identity column numbers the rows in insertion order.
    await connection.execute(
        f'INSERT INTO {tables.outbox} (destination, topic, body, message_id, headers) '
        'SELECT destination, topic, body, message_id, headers '
        'FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[]) WITH ORDINALITY '
        'AS t(destination, topic, body, message_id, headers, n) ORDER BY n',
        [s.destination for s in staged], [s.topic for s in staged], [s.body for s in staged],
        [s.message_id for s in staged], [json.dumps(dict(s.headers)) for s in staged], timeout=timeout)
