"""``tx``: one database transaction whose sends go through the outbox.

A handler with effects gets it as ``tx``; ``PostgresEffects.transaction()``
gives one anywhere else (a web request). Run SQL with ``tx.execute`` /
``tx.fetch`` / ``tx.fetchrow`` / ``tx.fetchval`` / ``tx.executemany`` (asyncpg
calls on the transaction's connection, ``$1`` placeholders), or on
``tx.connection`` itself; send with ``tx.broker`` and ``tx.bus``. Everything
commits together after the handler returns, or nothing does.

    @consumer(queues.orders, effects=effects)
    async def handle(self, tx, order_id: int, **_):
        await tx.execute('INSERT INTO orders (id) VALUES ($1)', order_id)
        await tx.broker.billing.send({'order_id': order_id})

Do not ``COMMIT`` or ``ROLLBACK`` by hand, nor use ``tx.connection.transaction()``
(asyncpg refuses it inside a transaction it did not open): use
``async with tx.savepoint():`` for a part that may fail on its own.
"""
from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._ids import outgoing_id
from ._outbox import OutboxBroker, OutboxBus, Staged

if TYPE_CHECKING:

    from ..catalog import Catalog
    from ._types import Connection

__all__ = ['Transaction']


class Transaction:
    """A transaction on the effects database; ``message_id`` is the handled message's (or a fresh one).

    Not run: needs PostgreSQL (and the backends of the broker and bus).
    >>> async with effects.transaction() as tx:                       # doctest: +SKIP
    ...     await tx.execute('UPDATE accounts SET total = total + $1 WHERE id = $2', 10, 7)
    ...     await tx.broker.audit.send({'account': 7, 'added': 10})
    """

    def __init__(self, connection: Connection, catalog: Catalog, message_id: str,
                 queue: str | None = None) -> None:
        self.connection = connection
        self.message_id = message_id
        self.queue = queue
        self.broker = OutboxBroker(self, catalog)
        self.bus = OutboxBus(self, catalog)
        self.staged: list[Staged] = []
        self._savepoints = itertools.count(1)

    def __repr__(self) -> str:
        where = f' from {self.queue}' if self.queue else ''
        return f'<Transaction {self.message_id}{where} staged={len(self.staged)}>'

    def stage(self, destination: str, body: str, *, topic: str | None = None,
              headers: Mapping[str, str] | None = None) -> str:
        """Stage one serialized send (the proxies of ``tx.broker``/``tx.bus`` call this); its message id."""
        message_id = outgoing_id(self.message_id, len(self.staged))
        self.staged.append(Staged(destination, body, message_id, topic, dict(headers or {})))
        return message_id

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        """``connection.execute``: run *query*; its status (``'INSERT 0 1'``)."""
        return await self.connection.execute(query, *args, timeout=timeout)

    async def executemany(self, query: str, args: Any, *, timeout: float | None = None) -> None:
        """``connection.executemany``: run *query* once per argument tuple."""
        await self.connection.executemany(query, args, timeout=timeout)

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]:
        """``connection.fetch``: every row."""
        return list(await self.connection.fetch(query, *args, timeout=timeout))

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        """``connection.fetchrow``: the first row or None."""
        return await self.connection.fetchrow(query, *args, timeout=timeout)

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any:
        """``connection.fetchval``: one value of the first row, or None."""
        return await self.connection.fetchval(query, *args, column=column, timeout=timeout)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[Transaction]:
        """A nested part that rolls back alone when it raises (the exception goes on).

        Sends staged inside it are dropped with it.

        Not run: needs PostgreSQL (and the backends of the broker and bus).
        >>> async with tx.savepoint():                            # doctest: +SKIP
        ...     await tx.execute('INSERT INTO maybe_dup ...')
        """
        name = f'microagent_sp{next(self._savepoints)}'
        staged = len(self.staged)
        await self.connection.execute(f'SAVEPOINT {name}')
        try:
            yield self
        except Exception:
            await self.connection.execute(f'ROLLBACK TO SAVEPOINT {name}')
            del self.staged[staged:]
            raise
        except BaseException:
            # Cancelled: no more round trips; the whole transaction is being abandoned.
            del self.staged[staged:]
            raise
        await self.connection.execute(f'RELEASE SAVEPOINT {name}')
