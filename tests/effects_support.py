"""Shared pieces of the effects tests: a migrated set of tables per test, a recording broker, a delivery."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from microagent import Catalog
from microagent.broker import AbstractQueueBroker
from microagent.delivery import DeadLetter, Delivery
from microagent.effects import PostgresEffects, Tables, migrate

from .services import require_port

DSN = 'postgresql://postgres@127.0.0.1:5432/test'


async def migrated(prefix: str) -> Tables:
    import asyncpg

    require_port('PostgreSQL', 5432)
    tables = Tables(prefix)
    connection = await asyncpg.connect(DSN)
    try:
        await migrate(connection, tables)
    finally:
        await connection.close()
    return tables


async def drop(tables: Tables) -> None:
    import asyncpg

    connection = await asyncpg.connect(DSN)
    try:
        await connection.execute(f'DROP TABLE IF EXISTS {tables.inbox}, {tables.outbox}, {tables.meta}')
        await connection.execute(f'DROP TABLE IF EXISTS {tables.prefix}effects')
    finally:
        await connection.close()


async def effects_for(uid: str, **options: Any) -> AsyncIterator[PostgresEffects]:
    """A PostgresEffects on tables of its own (and an ``<prefix>effects`` table for handlers to write to)."""
    pytest.importorskip('asyncpg')
    tables = await migrated(f'ma_{uid}_')
    effects = PostgresEffects(DSN, prefix=tables.prefix, **options)
    pool = await effects.pool()
    await pool.execute(f'CREATE TABLE {tables.prefix}effects (mid text NOT NULL, n int)')
    try:
        yield effects
    finally:
        await effects.close()
        await drop(tables)


class StubDelivery(Delivery):
    """A delivery with a given id that records how it was settled."""

    def __init__(self, body: str, message_id: str, attempt: int = 1) -> None:
        super().__init__(body, attempt, copy_id=f'copy-{attempt}', message_id=message_id)
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append('ack')

    async def retry(self, delay: float, error: str) -> None:
        self.settled.append(f'retry: {error}')

    async def dead_letter(self, error: str) -> None:
        self.settled.append(f'dead: {error}')


class RecordingBroker(AbstractQueueBroker):
    """Records every send (name, body, topic); ``fail_on`` bodies raise, ``gate`` holds sends until set."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        super().__init__('memory://recording', catalog=catalog)
        self.sent: list[tuple[str, str, str | None]] = []
        self.ids: list[str | None] = []
        self.headers: list[Any] = []
        self.fail_on: set[str] = set()
        self.gate: asyncio.Event | None = None
        self.changed = asyncio.Event()

    async def send(self, name: str, message: str, *, headers: Any = None, message_id: str | None = None) -> None:
        self.ids.append(message_id)
        self.headers.append(headers)
        await self._record(name, message, None)

    async def publish(self, exchange: str, message: str, topic: str | None = None, *, headers: Any = None,
                      message_id: str | None = None) -> None:
        self.ids.append(message_id)
        self.headers.append(headers)
        await self._record(exchange, message, topic)

    async def _record(self, name: str, message: str, topic: str | None) -> None:
        if message in self.fail_on:
            raise ConnectionError(f'cannot send {message}')
        self.sent.append((name, message, topic))
        self.changed.set()
        if self.gate is not None:
            await self.gate.wait()

    async def wait_sent(self, n: int, timeout: float = 10.0) -> list[tuple[str, str, str | None]]:
        async with asyncio.timeout(timeout):
            while len(self.sent) < n:
                self.changed.clear()
                await self.changed.wait()
        return self.sent

    async def bind(self, name: str) -> None:
        raise NotImplementedError

    async def queue_length(self, name: str, **options: Any) -> int:
        return 0

    async def dead_letters(self, name: str, limit: int = 100) -> list[DeadLetter]:
        return []
