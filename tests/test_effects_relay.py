"""The outbox outside handlers, the relay (order, sharing, failures, NOTIFY), the schema and pruning."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from microagent import Catalog, ConfigurationError, MicroAgent, Queue, Signal, receiver
from microagent.effects import PostgresEffects, Tables, migrate, prune_inbox
from microagent.tools.memory import MemorySignalBus

from .effects_support import DSN, RecordingBroker, drop, effects_for
from .helpers import Collector, eventually

asyncpg = pytest.importorskip('asyncpg')


@pytest.fixture
def decl(uid):
    catalog = Catalog()
    return {'catalog': catalog, 'queues': [Queue(f'q{n}_{uid}', catalog=catalog) for n in range(3)],
            'push': Queue(f'push_{uid}', exchange=f'ex_{uid}', topics=['push.#'], catalog=catalog),
            'created': Signal(f'created_{uid}', ['n'], catalog=catalog)}


@pytest.fixture
async def effects(uid, decl):
    async for made in effects_for(uid, catalog=decl['catalog'], relay=False):  # the tests run relays
        yield made


async def stage(effects, decl, transactions: int, per_tx: int) -> list[tuple[str, str]]:
    """*transactions* committed transactions of *per_tx* sends, round-robin over the queues."""
    expected = []
    for t in range(transactions):
        async with effects.transaction() as tx:
            for k in range(per_tx):
                queue = decl['queues'][(t + k) % len(decl['queues'])]
                await getattr(tx.broker, queue.name).send({'t': t, 'k': k})
                expected.append((queue.name, queue.serialize({'t': t, 'k': k})))
    return expected


async def pending(effects) -> int:
    pool = await effects.pool()
    return int(await pool.fetchval(f'SELECT count(*) FROM {effects.tables.outbox}'))


class SlowBroker(RecordingBroker):
    async def _record(self, name: str, message: str, topic: str | None) -> None:
        await asyncio.sleep(0.001)  # passes of two relays overlap
        await super()._record(name, message, topic)


async def test_two_relays_share_the_outbox_each_row_once_in_order_per_destination(effects, decl) -> None:
    expected = await stage(effects, decl, transactions=40, per_tx=5)
    broker = SlowBroker(decl['catalog'])
    one, two = effects.relay(broker, batch=20, destinations=1), effects.relay(broker, batch=20, destinations=1)

    async def drain(relay) -> None:
        while await relay.run_once():
            pass

    await asyncio.gather(drain(one), drain(two))
    assert await pending(effects) == 0
    published = [(name, body) for name, body, _ in broker.sent]
    assert sorted(published) == sorted(expected)  # each exactly once
    for queue in decl['queues']:  # per destination, in the order they were committed
        assert [b for n, b in published if n == queue.name] == [b for n, b in expected if n == queue.name]
    assert one.published > 0 and two.published > 0


async def test_a_failed_publish_stops_its_destination_and_the_rest_goes_later_in_order(effects, decl) -> None:
    name = decl['queues'][0].name
    async with effects.transaction() as tx:
        for k in range(5):
            await getattr(tx.broker, name).send({'k': k})
    broker = RecordingBroker(decl['catalog'])
    broker.fail_on = {decl['queues'][0].serialize({'k': 2})}
    relay = effects.relay(broker)
    with pytest.raises(ConnectionError):
        await relay.run_once()
    assert [json.loads(b)['k'] for _, b, _ in broker.sent] == [0, 1]
    assert await pending(effects) == 3
    broker.fail_on = set()
    assert await relay.run_once() == 3
    assert [json.loads(b)['k'] for _, b, _ in broker.sent] == [0, 1, 2, 3, 4]


async def test_a_relay_killed_after_publishing_leaves_its_rows_to_be_published_again(effects, decl) -> None:
    await stage(effects, decl, transactions=1, per_tx=1)
    pool = await effects.pool()
    ids = [r['message_id'] for r in await pool.fetch(f'SELECT message_id FROM {effects.tables.outbox}')]
    broker = RecordingBroker(decl['catalog'])
    broker.gate = asyncio.Event()  # the publish went out, the relay never gets to delete and commit
    dying = asyncio.create_task(effects.relay(broker).run_once())
    await broker.wait_sent(1)
    dying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dying
    broker.gate = None
    survivor = effects.relay(broker)
    # The dead pass's locks go with its backend (ended by the guard): no wait for a statement timeout.
    await eventually(survivor.run_once, timeout=10)
    assert [b for _, b, _ in broker.sent] == [broker.sent[0][1]] * 2  # published twice ...
    assert ids and await pending(effects) == 0  # ... under one message id, which the receiving inbox keeps once


async def test_notify_wakes_the_relay_at_once(effects, decl) -> None:
    broker = RecordingBroker(decl['catalog'])
    relay = effects.relay(broker, poll_interval=60.0)
    await relay.start()
    try:
        await eventually(lambda: relay.running)
        await eventually(lambda: relay.listening)
        await stage(effects, decl, transactions=1, per_tx=2)
        await broker.wait_sent(2, timeout=5)  # far less than the 60 s poll
    finally:
        await relay.stop()


async def test_signals_and_exchanges_through_the_outbox(effects, decl) -> None:
    got = Collector()

    class Listener(MicroAgent):
        @receiver(decl['created'])
        async def created(self, signal: Any, sender: str, n: int) -> None:
            got.add((sender, n))

    bus = MemorySignalBus('memory://', catalog=decl['catalog'])
    listener = Listener(bus=bus)
    await listener.start()
    broker = RecordingBroker(decl['catalog'])
    try:
        async with effects.transaction() as tx:
            await getattr(tx.bus, decl['created'].name).send('tests', n=7)
            await getattr(tx.broker, decl['push'].exchange).send({'a': 1}, topic='push.ios')
        assert await effects.relay(broker, bus).run_once() == 2
        assert await got.wait(1) == [('tests', 7)]
        assert [(n, json.loads(b), t) for n, b, t in broker.sent] == [(decl['push'].exchange, {'a': 1}, 'push.ios')]
    finally:
        await listener.stop()


async def test_a_signal_without_a_bus_waits_and_other_destinations_go_on(effects, decl) -> None:
    async with effects.transaction() as tx:
        await getattr(tx.bus, decl['created'].name).send('tests', n=1)
        await getattr(tx.broker, decl['queues'][0].name).send({'k': 1})
    broker = RecordingBroker(decl['catalog'])
    with pytest.raises(ConfigurationError, match='relay with a bus'):
        await effects.relay(broker).run_once()
    assert len(broker.sent) == 1 and await pending(effects) == 1


async def test_a_transaction_that_raises_stages_nothing(effects, decl) -> None:
    with pytest.raises(KeyError):
        async with effects.transaction() as tx:
            await getattr(tx.broker, decl['queues'][0].name).send({'k': 1})
            await tx.execute(f'INSERT INTO {effects.tables.prefix}effects VALUES ($1, $2)', 'x', 1)
            raise KeyError('the request failed')
    assert await pending(effects) == 0
    pool = await effects.pool()
    assert await pool.fetchval(f'SELECT count(*) FROM {effects.tables.prefix}effects') == 0


async def test_sends_are_checked_when_staged(effects, decl) -> None:
    from microagent import DeliveryError, SignalArgumentsError
    from microagent.queue import QueueNotFound

    async with effects.transaction() as tx:
        with pytest.raises(QueueNotFound):
            await tx.broker.no_such_queue.send({})
        with pytest.raises(SignalArgumentsError):
            await getattr(tx.bus, decl['created'].name).send('tests', wrong=1)
        with pytest.raises(DeliveryError):
            await getattr(tx.broker, decl['push'].exchange).send({}, topic='mail.x')
    assert await pending(effects) == 0


async def test_old_inbox_rows_are_pruned(effects) -> None:
    pool = await effects.pool()
    inbox = effects.tables.inbox
    await pool.execute(f"INSERT INTO {inbox} (key, queue, handled_at) SELECT gen_random_uuid(), 'q', "
                       "now() - make_interval(days => n) FROM generate_series(0, 9) n")
    async with pool.acquire() as connection:
        assert await prune_inbox(connection, effects.tables, older_than=4.5 * 86400) == 5
    assert await pool.fetchval(f'SELECT count(*) FROM {inbox}') == 5


async def test_the_migration_is_idempotent_and_missing_tables_are_named(uid) -> None:
    tables = Tables(f'mb_{uid}_')
    connections = [await asyncpg.connect(DSN) for _ in range(2)]
    try:
        assert await asyncio.gather(*(migrate(c, tables) for c in connections)) == [1, 1]
    finally:
        for connection in connections:
            await connection.close()
        await drop(tables)
    effects = PostgresEffects(DSN, prefix=f'none_{uid}_')
    with pytest.raises(ConfigurationError, match='microagent db init'):
        await effects.pool()
    await effects.close()


def test_the_db_command_creates_shows_and_prunes(uid, capsys, monkeypatch) -> None:
    from microagent.cli import main

    prefix = f'mc_{uid}_'
    assert main(['db', 'init', '--sql', '--prefix', prefix]) == 0
    assert f'CREATE TABLE IF NOT EXISTS {prefix}inbox' in capsys.readouterr().out
    monkeypatch.setenv('MICROAGENT_DB_DSN', DSN)  # the DSN from the environment: no password in argv
    try:
        assert main(['db', 'init', '--prefix', prefix]) == 0
        assert json.loads(capsys.readouterr().out)['schema_version'] == 1
        assert main(['db', 'status', '--prefix', prefix]) == 0
        assert json.loads(capsys.readouterr().out)['outbox_pending'] == {}
        assert main(['db', 'prune', '--prefix', prefix, '--older-than', '1d']) == 0
        assert json.loads(capsys.readouterr().out) == {'pruned': 0, 'older_than_seconds': 86400.0}
    finally:
        asyncio.run(drop(Tables(prefix)))
    monkeypatch.delenv('MICROAGENT_DB_DSN')
    assert main(['db', 'status']) == 2
    assert 'MICROAGENT_DB_DSN' in capsys.readouterr().err
    assert main(['db', 'status', 'postgresql://u:hunter2@127.0.0.1:1/x']) == 2
    assert 'hunter2' not in capsys.readouterr().err


async def test_a_row_published_twice_is_handled_once_downstream(effects, decl) -> None:
    """The end-to-end promise: a relay dies after publishing, the next publishes again, one effect."""
    from microagent import consumer
    from microagent.tools.memory import MemoryBroker

    target = decl['queues'][0]
    runs = []

    class Downstream(MicroAgent):
        @consumer(target, effects=effects)
        async def handle(self, tx, k: int) -> None:
            runs.append(k)
            await tx.execute(f'INSERT INTO {effects.tables.prefix}effects VALUES ($1, $2)', 'down', k)

    class GatedMemory(MemoryBroker):
        gate: asyncio.Event | None = None

        async def send(self, name: str, message: str, **options: Any) -> None:
            await super().send(name, message, **options)
            if self.gate is not None:
                await self.gate.wait()  # published; the relay is "killed" here, before its delete

    async with effects.transaction() as tx:
        await getattr(tx.broker, target.name).send({'k': 1}, headers={'tenant': 'acme'})
    broker = GatedMemory('memory://', catalog=decl['catalog'])
    downstream = Downstream(broker=MemoryBroker('memory://', catalog=decl['catalog']))
    await downstream.start()
    try:
        broker.gate = asyncio.Event()
        dying = asyncio.create_task(effects.relay(broker).run_once())
        await eventually(lambda: len(runs) == 1)
        dying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dying
        broker.gate = None
        await eventually(effects.relay(broker).run_once)  # the same row, the same message id, again
        runner = downstream.broker.runner(target.name)
        await eventually(lambda: runner.stats.handled == 2)  # both copies acknowledged ...
        assert runs == [1]  # ... the handler ran once
        pool = await effects.pool()
        assert await pool.fetchval(f"SELECT count(*) FROM {effects.tables.prefix}effects WHERE mid = 'down'") == 1
    finally:
        await downstream.stop()


async def test_the_relay_publishes_under_the_rows_message_id_and_headers(effects, decl) -> None:
    async with effects.transaction() as tx:
        first = await getattr(tx.broker, decl['queues'][0].name).send({'k': 1}, headers={'traceparent': 't1'})
        second = await getattr(tx.broker, decl['push'].exchange).send({'k': 2}, topic='push.ios')
    broker = RecordingBroker(decl['catalog'])
    assert await effects.relay(broker).run_once() == 2
    assert sorted(broker.ids) == sorted([first, second])
    assert {'traceparent': 't1'} in broker.headers
    with pytest.raises(Exception, match='reserved'):
        async with effects.transaction() as tx:
            await getattr(tx.broker, decl['queues'][0].name).send({'k': 3}, headers={'x-attempt': '9'})


async def test_signal_headers_travel_through_the_outbox(effects, decl) -> None:
    from microagent.bus import signal_headers

    got = Collector()

    class Listener(MicroAgent):
        @receiver(decl['created'])
        async def created(self, signal: Any, sender: str, n: int) -> None:
            got.add(dict(signal_headers()))

    bus = MemorySignalBus('memory://', catalog=decl['catalog'])
    listener = Listener(bus=bus)
    await listener.start()
    try:
        async with effects.transaction() as tx:
            await getattr(tx.bus, decl['created'].name).send('tests', n=1, headers={'tenant': 'acme'})
        await effects.relay(RecordingBroker(decl['catalog']), bus).run_once()
        assert await got.wait(1) == [{'tenant': 'acme'}]
    finally:
        await listener.stop()
