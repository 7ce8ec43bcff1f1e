"""E: the cost of exactly-once effects, against the hand-written way to make a handler idempotent.

Both sides consume the same N messages (sent in batches, so the consumer is
what is measured) into the same table with the same statement, on an asyncpg
pool of the same size, on the PostgreSQL of ``$MICROAGENT_BENCH_PG`` (default
the local server):

* ``lib``: ``@consumer(queue, effects=PostgresEffects(dsn))``; the handler
  runs ``INSERT ... ON CONFLICT DO NOTHING`` on ``tx`` (BEGIN with the inbox
  row, the insert, COMMIT: three round trips);
* ``raw``: a plain ``@consumer(queue)`` whose handler runs the same
  ``INSERT ... ON CONFLICT DO NOTHING`` in autocommit (one round trip): the
  duplicate check the issue compares with.

The figure is the time per message (first send to last handled, over N);
the target is effects <= 1.3x the plain handler's.

    .venv/bin/python -m benchmarks.run_one --backend memory --scenario E --side lib --n 2000 --uid try1
"""
from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from microagent import Catalog, MicroAgent, Queue, consumer
from microagent.backends import make_broker
from microagent.broker import BoundQueue

from .measure import Seen, rate
from .settings import payload

__all__ = ['PG_DSN', 'PG_DSN_ENV', 'POOL_SIZE', 'run']

PG_DSN_ENV = 'MICROAGENT_BENCH_PG'
PG_DSN = 'postgresql://postgres@127.0.0.1:5432/test'
POOL_SIZE = 10  # PostgresEffects' default max_size; the plain side gets the same


def insert_sql(prefix: str) -> str:
    return f'INSERT INTO {prefix}effects (id, body) VALUES ($1, $2) ON CONFLICT DO NOTHING'


@asynccontextmanager
async def tables(dsn: str, prefix: str) -> AsyncIterator[None]:
    """The effects tables and the handlers' table, dropped afterwards."""
    import asyncpg

    from microagent.effects import Tables, migrate

    names = Tables(prefix)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await migrate(connection, names)
        await connection.execute(f'CREATE TABLE {prefix}effects (id bigint PRIMARY KEY, body text NOT NULL)')
        yield
    finally:
        await connection.execute(f'DROP TABLE IF EXISTS {names.inbox}, {names.outbox}, {names.meta}, '
                                 f'{prefix}effects')
        await connection.close()


def effects_agent(queue: Queue, seen: Seen, dsn: str, prefix: str) -> type[MicroAgent]:
    from microagent.effects import PostgresEffects

    effects = PostgresEffects(dsn, prefix=prefix, max_size=POOL_SIZE)
    sql = insert_sql(prefix)

    class WithEffects(MicroAgent):
        @consumer(queue, timeout=60, effects=effects)
        async def handle(self, tx: Any, **message: Any) -> None:
            await tx.execute(sql, message['id'], message['user'])
            seen.hit(message['id'])
    return WithEffects


def plain_agent(queue: Queue, seen: Seen, pool: Any, prefix: str) -> type[MicroAgent]:
    sql = insert_sql(prefix)

    class Plain(MicroAgent):
        @consumer(queue, timeout=60)
        async def handle(self, **message: Any) -> None:
            await pool.execute(sql, message['id'], message['user'])
            seen.hit(message['id'])
    return Plain


async def run(ctx: Any, side: str) -> dict[str, Any]:
    """Scenario E on *side* (``lib``: effects, ``raw``: the plain handler); its figures."""
    import asyncpg

    dsn = os.environ.get(PG_DSN_ENV, PG_DSN)
    prefix = f'bench_{ctx.uid}_'
    catalog = Catalog()
    queue = Queue(ctx.name, catalog=catalog)
    seen = Seen(ctx.n)
    async with tables(dsn, prefix):
        pool = None if side == 'lib' else await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        cls = effects_agent(queue, seen, dsn, prefix) if side == 'lib' else plain_agent(queue, seen, pool, prefix)
        broker = make_broker(ctx.dsn, catalog=catalog)
        agent = cls(broker=broker)
        try:
            await agent.start()
            return await _measure(ctx, BoundQueue(broker, queue), seen)
        finally:
            await agent.stop(timeout=5)
            await broker.close()
            if pool is not None:
                await pool.close()


async def _measure(ctx: Any, bound: BoundQueue, seen: Seen) -> dict[str, Any]:
    from .library import chunks, warm_queue

    await warm_queue(bound, seen, ctx.timeout)
    started = time.perf_counter()
    for part in chunks(ctx.n, ctx.batch):
        await bound.send_many([payload(i) for i in part])
    await seen.all(ctx.timeout)
    seconds = seen.last - started
    return {'count': seen.count, 'duplicates': seen.duplicates, 'e2e_rate': rate(seen.count, seconds),
            'per_message_ms': seconds / max(seen.count, 1) * 1000, 'seconds': seconds}
