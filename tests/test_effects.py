"""Effects with a consumer: the inbox, the transaction, rollback on failure, and the consumer option itself.

Against the PostgreSQL on 5432 (tables of its own per test) and the memory broker.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest

from microagent import Catalog, ConfigurationError, MicroAgent, Queue, Signal, consumer
from microagent.broker import Consumer
from microagent.exceptions import EffectsError
from microagent.tools.memory import MemoryBroker

from .effects_support import StubDelivery, effects_for
from .helpers import Collector, eventually

pytest.importorskip('asyncpg')


@pytest.fixture
async def effects(uid):
    async for made in effects_for(uid, relay_options={'poll_interval': 0.2}):
        yield made


@pytest.fixture
def decl(uid):
    catalog = Catalog()
    return {'catalog': catalog, 'orders': Queue(f'orders_{uid}', catalog=catalog),
            'billing': Queue(f'billing_{uid}', catalog=catalog),
            'push': Queue(f'push_{uid}', exchange=f'ex_{uid}', topics=['push.#'], catalog=catalog),
            'created': Signal(f'created_{uid}', ['n'], catalog=catalog)}


async def rows(effects, mid: str | None = None) -> list[Any]:
    pool = await effects.pool()
    where = ' WHERE mid = $1' if mid else ''
    return list(await pool.fetch(f'SELECT mid, n FROM {effects.tables.prefix}effects{where} ORDER BY n',
                                 *([mid] if mid else [])))


async def count(effects, table: str) -> int:
    pool = await effects.pool()
    return int(await pool.fetchval(f'SELECT count(*) FROM {getattr(effects.tables, table)}'))


def agent_with(effects, queue: Queue, handler: Any, **options: Any) -> type[MicroAgent]:
    class Writer(MicroAgent):
        @consumer(queue, effects=effects, **options)
        async def handle(self, tx, **message: Any) -> None:
            await handler(self, tx, **message)
    return Writer


def consumer_of(effects, decl, handler: Any) -> Consumer:
    agent = agent_with(effects, decl['orders'], handler)(broker=MemoryBroker('memory://', catalog=decl['catalog']))
    return agent.consumers[0]


async def test_a_handler_writes_and_sends_in_one_transaction(effects, decl) -> None:
    got = Collector()

    async def write(agent, tx, mid: str, n: int) -> None:
        await tx.execute(f'INSERT INTO {effects.tables.prefix}effects VALUES ($1, $2)', mid, n)
        await getattr(tx.broker, decl['billing'].name).send({'mid': mid})

    class Billing(MicroAgent):
        @consumer(decl['billing'])
        async def bill(self, mid: str) -> None:
            got.add(mid)

    broker = MemoryBroker('memory://', catalog=decl['catalog'])
    writer, billing = agent_with(effects, decl['orders'], write)(broker=broker), Billing(broker=broker)
    await writer.start()
    await billing.start()
    try:
        for n in range(5):
            await getattr(broker, decl['orders'].name).send({'mid': f'm{n}', 'n': n})
        assert sorted(await got.wait(5)) == [f'm{n}' for n in range(5)]
        assert [r['mid'] for r in await rows(effects)] == [f'm{n}' for n in range(5)]
        assert await count(effects, 'inbox') == 5
        async def published() -> bool:  # billing got them all; the relay's delete commits right after
            return await count(effects, 'outbox') == 0
        await eventually(published)
    finally:
        await billing.stop()
        await writer.stop()


async def test_a_redelivered_message_is_acked_without_running_the_handler(effects, decl) -> None:
    runs = []

    async def write(agent, tx, mid: str, n: int) -> None:
        runs.append(mid)
        await tx.execute(f'INSERT INTO {effects.tables.prefix}effects VALUES ($1, $2)', mid, n)

    agent = agent_with(effects, decl['orders'], write)(broker=MemoryBroker('memory://', catalog=decl['catalog']))
    target = agent.consumers[0]
    first = await effects.run(target, StubDelivery('{}', 'id-1'), {'mid': 'a', 'n': 1})
    again = await effects.run(target, StubDelivery('{}', 'id-1', attempt=2), {'mid': 'a', 'n': 1})
    other = await effects.run(target, StubDelivery('{}', 'id-2'), {'mid': 'b', 'n': 2})
    assert (first, again, other) == (True, False, True)
    assert runs == ['a', 'b']
    assert [r['mid'] for r in await rows(effects)] == ['a', 'b']


async def test_the_same_message_id_on_two_queues_is_two_handlings(effects, decl) -> None:
    async def write(agent, tx, mid: str, n: int) -> None:
        await tx.execute(f'INSERT INTO {effects.tables.prefix}effects VALUES ($1, $2)', mid, n)

    broker = MemoryBroker('memory://', catalog=decl['catalog'])
    one = agent_with(effects, decl['orders'], write)(broker=broker).consumers[0]
    two = agent_with(effects, decl['billing'], write)(broker=broker).consumers[0]
    assert await effects.run(one, StubDelivery('{}', 'same'), {'mid': 'a', 'n': 1})
    assert await effects.run(two, StubDelivery('{}', 'same'), {'mid': 'a', 'n': 2})
    assert len(await rows(effects, 'a')) == 2


async def test_a_failed_handler_rolls_back_everything_and_is_retried(effects, decl) -> None:
    attempts = []

    async def write(agent, tx, mid: str, n: int) -> None:
        attempts.append(mid)
        await tx.execute(f'INSERT INTO {effects.tables.prefix}effects VALUES ($1, $2)', mid, n)
        await getattr(tx.broker, decl['billing'].name).send({'mid': mid})
        if len(attempts) == 1:
            raise RuntimeError('first attempt fails after writing and sending')

    broker = MemoryBroker('memory://', catalog=decl['catalog'], retry_delay=0.01)
    agent = agent_with(effects, decl['orders'], write)(broker=broker)
    await agent.start()
    try:
        await getattr(broker, decl['orders'].name).send({'mid': 'x', 'n': 1})
        await eventually(lambda: len(attempts) == 2)
        await eventually(lambda: agent.broker.runner(decl['orders'].name).stats.handled == 1)
        assert [r['mid'] for r in await rows(effects)] == ['x']
        assert await count(effects, 'inbox') == 1
        assert await getattr(broker, decl['billing'].name).length() == 1  # one send, from the second attempt
    finally:
        await agent.stop()


async def test_a_statement_error_caught_by_the_handler_still_fails_the_commit(effects, decl) -> None:
    async def write(agent, tx, mid: str, n: int) -> None:
        await tx.execute(f'INSERT INTO {effects.tables.prefix}effects VALUES ($1, $2)', mid, n)
        with contextlib.suppress(Exception):  # the handler swallows it, but the transaction is aborted
            await tx.execute('SELECT 1/0')

    target = consumer_of(effects, decl, write)
    with pytest.raises(EffectsError, match='rolled the transaction back'):
        await effects.run(target, StubDelivery('{}', 'id-1'), {'mid': 'a', 'n': 1})
    assert await rows(effects) == []
    assert await count(effects, 'inbox') == 0


async def test_a_savepoint_rolls_back_alone(effects, decl) -> None:
    async def write(agent, tx, mid: str, n: int) -> None:
        await tx.execute(f'INSERT INTO {effects.tables.prefix}effects VALUES ($1, $2)', mid, n)
        with pytest.raises(ZeroDivisionError):
            async with tx.savepoint():
                await tx.execute(f'INSERT INTO {effects.tables.prefix}effects VALUES ($1, $2)', 'dropped', 0)
                await getattr(tx.broker, decl['billing'].name).send({'mid': 'dropped'})
                raise ZeroDivisionError
        await getattr(tx.broker, decl['billing'].name).send({'mid': mid})

    target = consumer_of(effects, decl, write)
    assert await effects.run(target, StubDelivery('{}', 'id-1'), {'mid': 'kept', 'n': 1})
    assert [r['mid'] for r in await rows(effects)] == ['kept']
    pool = await effects.pool()
    bodies = await pool.fetch(f'SELECT body FROM {effects.tables.outbox}')
    assert [json.loads(row['body'])['mid'] for row in bodies] == ['kept']


async def test_a_timed_out_handler_leaves_nothing_and_the_pool_recovers(effects, decl) -> None:
    started = asyncio.Event()

    async def write(agent, tx, mid: str, n: int) -> None:
        await tx.execute(f'INSERT INTO {effects.tables.prefix}effects VALUES ($1, $2)', mid, n)
        if mid == 'slow':
            started.set()
            await tx.execute('SELECT pg_sleep(30)')

    broker = MemoryBroker('memory://', catalog=decl['catalog'], retry_delay=0.01, max_attempts=1)
    agent = agent_with(effects, decl['orders'], write, timeout=0.5)(broker=broker)
    await agent.start()
    try:
        await getattr(broker, decl['orders'].name).send({'mid': 'slow', 'n': 1})
        await getattr(broker, decl['orders'].name).send({'mid': 'fast', 'n': 2})
        await eventually(lambda: agent.broker.runner(decl['orders'].name).stats.dead_lettered == 1)
        assert started.is_set()
        assert [r['mid'] for r in await rows(effects)] == ['fast']
        assert await count(effects, 'inbox') == 1
    finally:
        await agent.stop()


async def test_outgoing_ids_are_derived_from_the_incoming_id_and_the_position(effects, decl) -> None:
    async def send(agent, tx, mid: str, n: int) -> None:
        for k in range(n):
            await getattr(tx.broker, decl['billing'].name).send({'mid': mid, 'k': k})

    target = consumer_of(effects, decl, send)
    assert await effects.run(target, StubDelivery('{}', 'in-1'), {'mid': 'a', 'n': 3})
    from microagent.effects import outgoing_id
    pool = await effects.pool()
    ids = [r['message_id'] for r in await pool.fetch(f'SELECT message_id FROM {effects.tables.outbox} ORDER BY seq')]
    assert ids == [outgoing_id('in-1', k) for k in range(3)]


async def test_a_message_may_not_carry_the_tx_key(effects, decl) -> None:
    async def write(agent, tx, **message: Any) -> None:
        raise AssertionError('never called')

    broker = MemoryBroker('memory://', catalog=decl['catalog'])
    agent = agent_with(effects, decl['orders'], write)(broker=broker)
    await agent.start()
    try:
        await getattr(broker, decl['orders'].name).send({'mid': 'a', 'tx': 'forged'})
        await eventually(lambda: agent.broker.runner(decl['orders'].name).stats.dead_lettered == 1)
    finally:
        await agent.stop()


def test_the_consumer_option_is_checked_when_declared(decl) -> None:
    from microagent.effects import PostgresEffects

    effects = PostgresEffects('postgresql://nobody@127.0.0.1:1/none')
    with pytest.raises(ConfigurationError, match="argument named 'tx'"):
        @consumer(decl['orders'], effects=effects)
        async def no_tx(self, **message: Any) -> None: ...
    with pytest.raises(ConfigurationError, match='effects must have run, start and stop'):
        consumer(decl['orders'], effects=object())
    with pytest.raises(ConfigurationError, match='isolation'):
        PostgresEffects('postgresql://x@y/z', isolation='chaos')
    assert 'secret' not in repr(PostgresEffects('postgresql://user:secret@db/app'))


async def test_consumers_without_effects_are_unchanged(decl) -> None:
    target = Consumer(agent=None, handler=lambda: None, queue=decl['orders'], timeout=1)  # type: ignore[arg-type]
    assert 'effects' not in target.options


async def test_a_connection_whose_prepared_inbox_insert_was_dropped_is_replaced(effects, decl) -> None:
    import asyncpg

    from microagent.effects import PostgresEffects

    async def reckless(agent, tx, mid: str, n: int) -> None:
        await tx.execute('DEALLOCATE ALL')  # what tx.connection must not do; the library recovers anyway
        await tx.execute(f'INSERT INTO {effects.tables.prefix}effects VALUES ($1, $2)', mid, n)

    one = PostgresEffects(effects.dsn, prefix=effects.tables.prefix, relay=False, max_size=1)
    try:
        target = agent_with(one, decl['orders'], reckless)(broker=MemoryBroker('memory://')).consumers[0]
        assert await one.run(target, StubDelivery('{}', 'id-1'), {'mid': 'a', 'n': 1})
        with pytest.raises(asyncpg.InvalidSQLStatementNameError):  # a failed attempt: the runner retries
            await one.run(target, StubDelivery('{}', 'id-2'), {'mid': 'b', 'n': 2})
        assert await one.run(target, StubDelivery('{}', 'id-2', attempt=2), {'mid': 'b', 'n': 2})
        assert [r['mid'] for r in await rows(effects)] == ['a', 'b']
    finally:
        await one.close()
